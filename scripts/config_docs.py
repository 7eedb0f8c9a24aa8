"""Write docs/configuration.md from the YAML files under configs/, so the reference cannot drift.

Every option is listed with the dotted path a command line overrides, its default exactly as the
YAML writes it, and what it does: the comment lines directly above the key and any trailing
``# comment``. A file's leading comment block becomes its intro. Neither PyYAML nor OmegaConf keeps
comments, so the files are read line by line here; tests/test_docs.py checks that no key is lost.

    python scripts/config_docs.py           # rewrite docs/configuration.md
    python scripts/config_docs.py --check   # exit 1 when it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
DOC = ROOT / "docs" / "configuration.md"
NO_DESCRIPTION = "(no description in the config)"
# configs/local/*.yaml is git-ignored and per machine: documenting it would make the doc differ per machine
UNDOCUMENTED_GROUPS = {
    "local": "Machine-specific settings, kept out of git (`configs/local/*.yaml` is ignored)."
}
ORPHAN = "a blank line or the file's end parts this comment from any option; move it above one"
KEY = re.compile(r"(?P<key>[^\s:#'\"\[{-][^:]*?):(?:\s+(?P<value>.*))?")


@dataclass
class Option:
    key: str  # the dotted path, with the file's package in front
    default: str  # as written; "" for a mapping or a block list
    about: list[tuple[str, bool]] = field(default_factory=list)  # comment lines, (text, is_code)
    items: list[tuple[list[str], list[tuple[str, bool]]]] = field(default_factory=list)  # block list


@dataclass
class ConfigFile:
    path: Path  # relative to configs/
    package: str  # "" for the global package
    intro: list[tuple[str, bool]]
    options: list[Option]
    composes: list[tuple[list[str], list[tuple[str, bool]]]]  # the defaults list's items
    composes_about: list[tuple[str, bool]]


def comment(line: str) -> tuple[str, bool]:
    """A comment line's text, and whether it is indented like a command (``#   nanogpt-train ...``)."""
    raw = line.strip()[1:]
    return raw.strip(), raw.startswith("  ")


def split_trailing_comment(body: str) -> tuple[str, str]:
    """Split ``value  # why`` into value and comment; a ``#`` inside quotes or words is not one."""
    quote = None
    for i, char in enumerate(body):
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        elif char == "#" and quote is None and (i == 0 or body[i - 1] in " \t"):
            return body[:i].rstrip(), body[i + 1 :].strip()
    return body, ""


def parse(path: Path, config_dir: Path = CONFIG_DIR) -> ConfigFile:
    """Read one YAML file's options, defaults list and intro, keeping the comments YAML loaders drop."""
    rel = path.relative_to(config_dir)
    lines = path.read_text().splitlines()
    package = ".".join(rel.parts[:-1])  # Hydra's default: the group's path
    intro: list[tuple[str, bool]] = []
    start = 0
    while start < len(lines) and lines[start].lstrip().startswith("#"):
        if lines[start].startswith("# @package"):
            package = lines[start].split(maxsplit=2)[2].strip().removeprefix("_global_").lstrip(".")
        else:
            intro.append(comment(lines[start]))
        start += 1
    prefix = [package] if package else []
    options: list[Option] = []
    stack: list[tuple[int, Option]] = []  # the open mappings and lists, by indent
    pending: list[tuple[str, bool]] = []  # comment lines waiting for their key
    pending_at = 0  # the line number of the first of them
    item_indent = None  # the dash's indent while a block-list item is open
    composes = Option("defaults", "")
    for number, line in enumerate(lines[start:], start + 1):
        stripped, indent = line.strip(), len(line) - len(line.lstrip(" "))
        if stripped.startswith("#"):
            pending_at = pending_at if pending else number
            pending.append(comment(line))
            continue
        if not stripped:
            if pending:
                raise ValueError(f"configs/{rel}:{pending_at}: {ORPHAN}")
            continue
        body, trailing = split_trailing_comment(stripped)
        about = pending + ([(trailing, False)] if trailing else [])
        pending = []
        if body == "-" or body.startswith("- "):
            while stack and stack[-1][0] > indent:
                stack.pop()
            if not stack or stack[-1][1].default:
                raise ValueError(f"configs/{rel}:{number}: a list item outside a list")
            stack[-1][1].items.append(([body[2:].strip()], about))
            item_indent = indent
        elif item_indent is not None and indent > item_indent:  # more keys of a mapping item
            items = stack[-1][1].items
            items[-1][0].append(body)
            items[-1][1].extend(about)
        elif match := KEY.fullmatch(body):
            item_indent = None
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = [stack[-1][1].key] if stack else prefix
            option = Option(".".join([*parent, match["key"]]), match["value"] or "", about)
            if stack or match["key"] != "defaults":
                options.append(option)
            else:  # Hydra's defaults list: what the file composes, not an option
                composes = option
            if not option.default:
                stack.append((indent, option))
        else:
            raise ValueError(
                f"configs/{rel}:{number}: config_docs.py cannot read {stripped!r}; write it as `key: value`"
            )
    if pending:
        raise ValueError(f"configs/{rel}:{pending_at}: {ORPHAN}")
    return ConfigFile(rel, package, intro, options, composes.items, composes.about)


def code(text: str) -> str:
    """``text`` as inline code, safe for a table cell."""
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def prose(text: str) -> str:
    """Comment text as markdown: ``<run>`` would vanish as an HTML tag and ``|`` would split a cell."""
    parts = re.split(r"(`[^`]*`)", text)  # the comment's own code spans stay as written
    escaped = (part if i % 2 else re.sub(r"([<*])", r"\\\1", part) for i, part in enumerate(parts))
    return "".join(escaped).replace("|", "\\|")


def sentence(lines: list[tuple[str, bool]]) -> str:
    """Comment lines joined into one line of a table cell; command-like lines become inline code."""
    return " ".join(code(text) if is_code else prose(text) for text, is_code in lines if text)


def paragraphs(lines: list[tuple[str, bool]]) -> list[str]:
    """A header comment as markdown blocks: prose lines joined, command lines in a code block."""
    blocks: list[tuple[bool, list[str]]] = []
    for text, is_code in lines:
        if not blocks or blocks[-1][0] != is_code:
            blocks.append((is_code, []))
        blocks[-1][1].append(text)
    return ["```\n" + "\n".join(b) + "\n```" if is_code else prose(" ".join(b)) for is_code, b in blocks]


def default_of(option: Option) -> str:
    """The default as written; a block list is shown in flow style, ``[a, {k: v, k2: v2}]``."""
    if not option.items:
        return code(option.default) if option.default else ""
    items = [
        ", ".join(p) if len(p) == 1 and not KEY.fullmatch(p[0]) else "{" + ", ".join(p) + "}"
        for p, _ in option.items
    ]
    return code("[" + ", ".join(items) + "]")


def heading(cf: ConfigFile) -> str:
    """``model/baby_gpt.yaml`` -> ``model=baby_gpt``; a top-level file keeps its name."""
    if len(cf.path.parts) == 1:
        return cf.path.name
    return f"{cf.path.parts[0]}={cf.path.with_suffix('').relative_to(cf.path.parts[0]).as_posix()}"


def anchor(title: str) -> str:
    """The fragment GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def file_section(cf: ConfigFile) -> list[str]:
    """One option file: where it lives, its intro, what it composes and a table of its options."""
    package = f"package `{cf.package}`" if cf.package else "global package"
    out = [f"### {heading(cf)}", f"`configs/{cf.path.as_posix()}`, {package}", *paragraphs(cf.intro)]
    if cf.composes:
        items = [code(" ".join(p)) + (f" ({sentence(about)})" if about else "") for p, about in cf.composes]
        out.append(" ".join(["Composes:", ", ".join(items) + ".", sentence(cf.composes_about)]).strip())
    # a mapping gets its own row only when a comment describes it; its keys have theirs
    rows = [
        o
        for o in cf.options
        if o.about or o.default or o.items or not any(p.key.startswith(o.key + ".") for p in cf.options)
    ]
    if not rows:
        return [*out, "No options."]
    table = ["| option | default | what it does |", "| --- | --- | --- |"]
    for o in rows:
        about = sentence(o.about + [line for _, item_about in o.items for line in item_about])
        table.append(f"| {code(o.key)} | {default_of(o)} | {about or NO_DESCRIPTION} |")
    return [*out, "\n".join(table)]


def render(config_dir: Path = CONFIG_DIR) -> str:
    """The whole of docs/configuration.md, from the configs as they are now."""
    top = [parse(p, config_dir) for p in sorted(config_dir.glob("*.yaml"))]
    groups = sorted(d.name for d in config_dir.iterdir() if d.is_dir())
    chosen = {
        " ".join(p).split(":")[0].removeprefix("optional ").strip(): " ".join(p)
        for p, _ in next((cf.composes for cf in top if cf.path.name == "train.yaml"), [])
    }
    toc = [
        "- [Top-level configs](#top-level-configs): "
        + ", ".join(f"[{heading(cf)}](#{anchor(heading(cf))})" for cf in top)
    ]
    body = ["## Top-level configs", *(block for cf in top for block in file_section(cf))]
    for group in groups:
        files = [] if group in UNDOCUMENTED_GROUPS else sorted((config_dir / group).rglob("*.yaml"))
        parsed = [parse(p, config_dir) for p in files]
        links = ", ".join(f"[{heading(cf).split('=', 1)[1]}](#{anchor(heading(cf))})" for cf in parsed)
        toc.append(f"- [{group}](#{anchor(group)})" + (f": {links}" if links else ""))
        body.append(f"## {group}")
        if group in chosen:
            pick = "" if group in UNDOCUMENTED_GROUPS else f"; pick an option with `{group}=<name>`"
            body.append(f"In train.yaml's defaults: {code(chosen[group])}{pick}.")
        if group in UNDOCUMENTED_GROUPS or not parsed:
            body.append(UNDOCUMENTED_GROUPS.get(group, "No config files."))
        body.extend(block for cf in parsed for block in file_section(cf))
    header = [
        "# Configuration reference",
        "> Generated from `configs/` by `python scripts/config_docs.py`; do not edit it by hand. Change"
        " the comments in the YAML files and run the script again; tests/test_docs.py fails while the two"
        " disagree.",
        "Each option is shown by the dotted path a command line overrides (`nanogpt-train model.n_layer=8`),"
        " with its default exactly as the YAML writes it and the comment the YAML gives it.",
        "## Contents",
        "\n".join(toc),
    ]
    return "\n\n".join(header + body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the doc is out of date; write nothing"
    )
    args = parser.parse_args(argv)
    text = render()
    name = DOC.relative_to(ROOT) if DOC.is_relative_to(ROOT) else DOC
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{name} is out of date with configs/; run python scripts/config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
