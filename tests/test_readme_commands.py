"""Every command the README and docs/ show is checked against the code, so neither can drift.

- Every ``nanogpt-train``, ``nanogpt-sample``, ``nanogpt-eval`` and ``nanogpt-export`` command (in
  ``bash`` blocks and in inline code) is composed by Hydra with its own overrides: a renamed option,
  group or experiment fails here. A sweep (``-m``) is composed at its first job; placeholders such
  as ``<time>`` stand for any value. A training command's options pass the checks a run makes
  before any work, and its model config builds.
- The ``nanogpt-train`` commands that can train on this machine's CPU, offline, and need no file of
  the user's are run, each set of overrides once, shortened with ``debug=fdr``: one training and one
  validation batch (a sweep: its first job). One that picks the same config of every group as an
  experiment (its values aside) trains as that experiment's smoke test does
  (``test_configs.py``), so it trains with the ``nightly`` tests only; the others with the ``slow``.
- Every ``python -m benchmarks <suite> ...`` command names a suite that exists, a mode it has and
  flags it takes (its ``--help``); ``python scripts/...`` (the tools) and ``nanogpt-report`` likewise.

The two set-up commands at the top of the README are CI's own: ``.ci/run`` runs the second.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from omegaconf import open_dict

from benchmarks.suites import SUITES
from nanogpt import CONFIG_DIR
from nanogpt.cli.train import OPTIONAL_GROUPS
from nanogpt.hf.gpt2 import pretrained_shape
from nanogpt.options import check_options
from nanogpt.training.job import train

from .helpers import derived

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = {
    "nanogpt-train": "train",
    "nanogpt-sample": "sample",
    "nanogpt-eval": "eval",
    "nanogpt-export": "export",
}
INLINE = re.compile(
    r"`((?:nanogpt-(?:train|sample|eval|export|report)|python scripts/|python -m benchmarks|torchrun )[^`]*)`"
)


def _substitute_subshells(line: str) -> str:
    # the README's first command picks its experiment with $(python -c ...): either one is shown
    while "$(" in line:
        start = line.index("$(")
        depth, end = 0, start + 1
        for end in range(start + 1, len(line)):
            depth += {"(": 1, ")": -1}.get(line[end], 0)
            if depth == 0:
                break
        line = line[:start] + "shakespeare_char_cpu" + line[end + 1 :]
    return line


def _split(line: str) -> list[list[str]]:
    """One shell line -> its commands (split at && | ;), as argument lists without comments."""
    line = re.sub(r"<[^>]*>", "x", _substitute_subshells(line))  # <time>, <before|after>: any value
    lexer = shlex.shlex(os.path.expandvars(line), posix=True, punctuation_chars="&|;")  # $HOME as bash does
    lexer.whitespace_split, lexer.commenters = True, "#"
    commands, current = [], []
    for token in lexer:
        if token in ("&&", "||", "|", ";", "&"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


def _program(tokens: list[str]) -> tuple[str, list[str]]:
    """(program, its arguments): leading VAR=value assignments dropped, torchrun's -m module unwrapped."""
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):
        tokens = tokens[1:]
    name = Path(tokens[0]).name if tokens else ""
    if name == "torchrun" and "nanogpt.cli.train" in tokens:
        return "nanogpt-train", tokens[tokens.index("nanogpt.cli.train") + 1 :]
    if name in ("python", "python3") and len(tokens) > 1 and tokens[1].startswith("scripts/"):
        return tokens[1], tokens[2:]
    if name in ("python", "python3") and tokens[1:3] == ["-m", "benchmarks"]:  # python -m benchmarks <suite>
        suite = tokens[3:4] if len(tokens) > 3 and not tokens[3].startswith("-") else []
        return " ".join(["benchmarks", *suite]), tokens[3 + len(suite) :]
    return name, tokens[1:]


@cache
def shown_commands() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(where, program, arguments) of every command the pages show."""
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = [
            line
            for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
            for line in block.replace("\\\n", " ").splitlines()
        ]
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        lines += [span for span in INLINE.findall(prose) if "..." not in span]  # "..." elides on purpose
        for line in lines:
            for tokens in _split(line):
                program, args = _program(tokens)
                found.append((f"{page.name}: {' '.join(tokens)[:90]}", program, tuple(args)))
    return tuple(found)


def _overrides(args: tuple[str, ...]) -> list[str]:
    """The Hydra overrides of a command, at a sweep's first job."""
    kept, skip = [], False
    for arg in args:
        if skip or arg in ("-m", "--multirun"):
            skip = False
            continue
        if arg == "--cfg":
            skip = True  # its value (job, hydra, all) follows
            continue
        if arg.removesuffix("=null") in OPTIONAL_GROUPS:
            arg = "~" + arg.removesuffix("=null")  # as nanogpt-train's cli() reads it
        kept.append(arg)
    first = []
    for override in OverridesParser.create().parse_overrides(kept):
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")
        first.append(f"{prefix}{override.key_or_group}={next(override.sweep_string_iterator())}")
    return first


def compose_command(config_name: str, overrides: list[str], hydra: bool):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)


OURS = [c for c in shown_commands() if c[1] in CONFIGS]
TRAIN = [c for c in OURS if c[1] == "nanogpt-train"]
SCRIPTS = [
    c for c in shown_commands() if c[1].startswith(("scripts/", "benchmarks")) or c[1] == "nanogpt-report"
]


def test_the_pages_show_commands_of_every_kind():
    assert len(TRAIN) >= 30 and {c[1] for c in OURS} == set(CONFIGS)
    assert {"benchmarks train", "benchmarks sample", "scripts/compare_runs.py", "nanogpt-report"} <= {
        c[1] for c in SCRIPTS
    }


def _once(commands: list) -> list:
    """Each command once, where it is first shown (the pages repeat some word for word)."""
    seen, unique = set(), []
    for where, program, args in commands:
        if (program, args) not in seen:
            seen.add((program, args))
            unique.append((where, program, args))
    return unique


@pytest.mark.parametrize("where,program,args", _once(OURS), ids=[c[0] for c in _once(OURS)])
def test_every_command_shown_composes(where, program, args):
    cfg = compose_command(CONFIGS[program], _overrides(args), hydra=True)
    if program == "nanogpt-train":
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir = "."
        check_options(cfg)
        derived(cfg, pretrained_shape=_shape(cfg.model.get("init_from")))


def _shape(init_from: str | None) -> dict | None:
    """The shape a command's model.init_from gives: a GPT-2 name's, known offline; a user's folder
    (which the tests do not have) as GPT-2's own."""
    if init_from is None:
        return None
    try:
        return pretrained_shape(init_from)
    except FileNotFoundError:
        return pretrained_shape("gpt2")


def _trains_here(cfg, args: tuple[str, ...]) -> bool:
    """Whether a composed command trains on this CPU, offline, on files the tests have."""
    return (
        cfg.trainer.get("accelerator") in ("cpu", "auto")
        and cfg.trainer.get("strategy", "auto") == "auto"
        and cfg.data.get("source") is None  # data=text needs the user's files
        and cfg.model.get("init_from") is None  # pretrained GPT-2 is a download
        and not _needs_what_tests_lack(args)
    )


def _needs_what_tests_lack(args: tuple[str, ...]) -> bool:
    """W&B, or a placeholder for the user's files, in a command's words."""
    text = " ".join(args)
    return "wandb" in text or bool(re.search(r"=x\b|/x\b|/path/to|ckpt_path=|data\.path=", text))


GROUPS = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()}


def _picks(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """The group configs a command picks (debug aside: every smoke test adds debug=fdr); the rest of
    its overrides are values."""
    return tuple(
        sorted(o for o in overrides if o.lstrip("+~").split("=")[0].split("/")[0] in GROUPS - {"debug"})
    )


def _runnable() -> list:
    """The training commands, each set of overrides once (the README and docs/ repeat some). Those
    that pick what an experiment picks (``experiment=<name>`` and values) train as its smoke test
    does, and those that pick what an earlier command picked train as that one does: they are
    marked nightly; the first of each other set of picks is marked slow."""
    seen, picked, unique = set(), set(), []
    for where, program, args in TRAIN:
        overrides = tuple(o for o in _overrides(args) if not o.lstrip("+~").startswith("hydra"))
        if "hparams_search" not in " ".join(args) and overrides not in seen:
            seen.add(overrides)
            picks = _picks(overrides)
            trained = picks in picked or (len(picks) == 1 and picks[0].startswith("experiment="))
            if not _needs_what_tests_lack(args):  # one that skips trains nothing for the others
                picked.add(picks)
            mark = pytest.mark.nightly if trained else pytest.mark.slow
            unique.append(pytest.param(where, program, args, id=where, marks=mark))
    return unique


RUNNABLE = _runnable()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One folder of prepared corpora for all the commands, so each text is tokenized once."""
    return tmp_path_factory.mktemp("data")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("where,program,args", RUNNABLE)  # slow or nightly: see _runnable
def test_every_cpu_training_command_shown_trains_one_batch(
    where, program, args, shakespeare_path, data_dir, tmp_path
):
    overrides = [o for o in _overrides(args) if not o.lstrip("+~").startswith("hydra")]
    if not _trains_here(compose_command("train", overrides, hydra=False), args):
        pytest.skip("needs a GPU, several processes, the user's files, W&B or a download")
    cfg = compose_command("train", [*overrides, "debug=fdr"], hydra=False)
    with open_dict(cfg):
        if cfg.data.get("global_batch_tokens") is None:
            # one batch of 2 windows: a GPU-sized model's batch of 64 costs a minute on 2 CPU cores,
            # and proves no more about the command
            cfg.data.batch_size = 2
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(tmp_path / "runs")
        cfg.paths.output_dir = str(tmp_path / "run")
        if cfg.data.get("path") is None and "shakespeare" in str(cfg.data.get("data_dir")):
            cfg.data.path = str(shakespeare_path)
        # a long recipe's compile=auto would compile from a cold cache for this one batch; compiling
        # is test_compiler.py's
        cfg.compile = False
    train(cfg)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "completed"


@cache
def help_text(program: str) -> str:
    if program.startswith("scripts/"):
        cmd = [sys.executable, str(ROOT / program)]
    elif program.startswith("benchmarks"):
        cmd = [sys.executable, "-m", *program.split()]
    else:
        cmd = [str(Path(sys.executable).with_name(program))]
    done = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, f"{program} --help failed: {done.stderr[-1000:]}"
    return done.stdout


@pytest.mark.parametrize("where,program,args", SCRIPTS, ids=[c[0] for c in SCRIPTS])
def test_every_script_command_shown_names_a_real_mode_and_flags(where, program, args):
    if program.startswith("scripts/"):
        assert (ROOT / program).is_file(), f"{where}: no {program}"
    if program.startswith("benchmarks"):
        suites = {"benchmarks", *(f"benchmarks {suite}" for suite in SUITES)}
        assert program in suites, f"{where}: {program!r} names no suite of {SUITES}"
    text = help_text(program)
    flags = [a.split("=")[0] for a in args if a.startswith("--")]
    assert all(flag in text for flag in flags), f"{where}: {program} takes none of {flags}"
    modes = re.search(r"\{([\w,]+)\}", text)  # argparse's choices of a positional mode
    if modes and args and not args[0].startswith("-") and "=" not in args[0] and "/" not in args[0]:
        assert args[0] in modes.group(1).split(","), f"{where}: {program} has no mode {args[0]}"
