"""docs/configuration.md is generated from configs/ by scripts/config_docs.py: these keep the two equal.

The doc is checked against the configs as OmegaConf loads them, not against the script's own parser,
so a parser bug cannot silently drop an option or change its default.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
DOC = ROOT / "docs" / "configuration.md"
SCRIPT = ROOT / "scripts" / "config_docs.py"
FIX = "run python scripts/config_docs.py"
# configs/local/ is git-ignored and machine-specific; the doc leaves it out on purpose
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p.relative_to(CONFIG_DIR).parts[0] != "local")


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("config_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


config_docs = load_script()
GENERATED = config_docs.render()


def cells(row: str) -> list[str]:
    """A markdown table row's cells, unescaped, with the inline-code backticks taken off."""
    parts = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)[1:-1]]
    return [re.sub(r"^(``? ?)(.*?)( ?``?)$", r"\2", c) if c.startswith("`") else c for c in parts]


def sections(doc: str) -> dict[str, tuple[str, dict[str, list[str]]]]:
    """configs/-relative path -> (the section's text, its table rows by option)."""
    out = {}
    for section in doc.split("\n### ")[1:]:
        source = re.search(r"^`configs/(\S+)`", section, re.M)[1]
        rows = [cells(line) for line in section.splitlines() if line.startswith("| `")]
        out[source] = (section, {row[0]: row for row in rows})
    return out


def package(path: Path) -> str:
    """Hydra's package of a config file: its group's path unless a ``# @package`` line says otherwise."""
    first = path.read_text().partition("\n")[0]
    if first.startswith("# @package"):
        return first.split()[2].removeprefix("_global_").lstrip(".")
    return ".".join(path.relative_to(CONFIG_DIR).parts[:-1])


def nodes(node: dict, prefix: str) -> dict[str, Any]:
    """Every dotted path under a loaded config to its value; a list is one value, as the doc shows it."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out[path] = value
        if isinstance(value, dict):
            out |= nodes(value, path)
    return out


def test_doc_is_what_the_script_generates():
    written = DOC.read_text() if DOC.is_file() else ""
    if written != GENERATED:
        diff = difflib.unified_diff(
            written.splitlines(), GENERATED.splitlines(), "written", "generated", lineterm=""
        )
        pytest.fail(
            f"docs/configuration.md is out of date with configs/; {FIX}\n" + "\n".join(list(diff)[:30])
        )


def test_check_mode_fails_on_a_stale_doc_and_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config_docs, "DOC", tmp_path / "configuration.md")
    assert config_docs.main(["--check"]) == 1  # no doc yet
    (tmp_path / "configuration.md").write_text(GENERATED.replace("| `model.n_layer` | `6` |", "| `6` |"))
    assert config_docs.main(["--check"]) == 1
    assert FIX in capsys.readouterr().err
    assert config_docs.main([]) == 0
    assert (tmp_path / "configuration.md").read_text() == GENERATED
    assert config_docs.main(["--check"]) == 0


def test_check_mode_passes_from_the_command_line():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_every_key_is_documented_with_its_default(path):
    rel = path.relative_to(CONFIG_DIR).as_posix()
    docs = sections(GENERATED)
    assert rel in docs, f"configs/{rel} has no section in docs/configuration.md"
    _, rows = docs[rel]
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    loaded.pop("defaults", None)  # shown as "Composes:", not as an option
    every = nodes(loaded, package(path))
    leaves = {key: value for key, value in every.items() if not isinstance(value, dict)}
    assert not leaves.keys() - rows.keys(), f"configs/{rel}: options missing from the doc"
    assert not rows.keys() - every.keys(), f"configs/{rel}: the doc shows options the file does not have"
    for key, value in leaves.items():
        # the default, written as YAML, must load back to what OmegaConf read from the file
        shown = OmegaConf.to_container(OmegaConf.create(f"v: {rows[key][1]}"), resolve=False)["v"]
        assert shown == value, (
            f"configs/{rel}: {key} is documented as {rows[key][1]!r}, the file holds {value!r}"
        )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_no_comment_is_lost_and_every_row_says_what_it_does(path):
    rel = path.relative_to(CONFIG_DIR).as_posix()
    section, rows = sections(GENERATED)[rel]
    plain = re.sub(r"\\([<*|])", r"\1", section)
    for line in path.read_text().splitlines():
        text = line.strip()[1:].strip() if line.strip().startswith("#") else line.partition(" #")[2].strip()
        if text and not text.startswith("@package"):
            assert text in plain, f"configs/{rel}: the comment {text!r} is not in the doc"
    assert all(row[2] for row in rows.values()), f"configs/{rel}: a row with an empty description"
    # the script renders a key without a comment as NO_DESCRIPTION; the configs must have none
    bare = [key for key, row in rows.items() if row[2] == config_docs.NO_DESCRIPTION]
    assert not bare, (
        f"configs/{rel}: {', '.join(bare)} {'has' if len(bare) == 1 else 'have'} no description; add a "
        f"comment above {'it' if len(bare) == 1 else 'each'} in the YAML and {FIX}"
    )


def test_the_parser_reads_nesting_lists_and_trailing_comments(tmp_path):
    (tmp_path / "group").mkdir()
    (tmp_path / "group" / "opt.yaml").write_text(
        "# The intro.\n"
        "#   nanogpt-train group=opt\n"
        "defaults:\n"
        "  # the base\n"
        "  - base\n"
        "  - _self_\n"
        "\n"
        "# a mapping\n"
        "outer:\n"
        "  # deep\n"
        "  inner: ${paths.x}/y  # and a trailing one\n"
        "  quoted: 'a # b'\n"
        "pipe: a|b\n"
        "plugins:\n"
        "  - _target_: some.Class\n"
        "    path: x.y\n"
        "  - plain\n"
    )
    doc = config_docs.render(tmp_path)
    section, rows = sections(doc)["group/opt.yaml"]
    assert "### group=opt" in doc and "The intro.\n\n```\nnanogpt-train group=opt\n```" in section
    assert "Composes: `base` (the base), `_self_`." in section
    assert rows["group.outer"][1:] == ["", "a mapping"]
    assert rows["group.outer.inner"][1:] == ["${paths.x}/y", "deep and a trailing one"]
    assert rows["group.outer.quoted"][1:] == ["'a # b'", config_docs.NO_DESCRIPTION]
    assert rows["group.pipe"][1] == "a|b"
    assert rows["group.plugins"][1] == "[{_target_: some.Class, path: x.y}, plain]"


def test_a_comment_that_describes_no_option_is_refused(tmp_path):
    (tmp_path / "train.yaml").write_text("seed: 1\n# orphaned\n\nname: x\n")
    with pytest.raises(ValueError, match=r"train.yaml:2: a blank line or the file.s end parts this comment"):
        config_docs.render(tmp_path)
    (tmp_path / "train.yaml").write_text("seed: 1\n# at the end\n")
    with pytest.raises(ValueError, match=r"train.yaml:2: a blank line or the file.s end"):
        config_docs.render(tmp_path)
