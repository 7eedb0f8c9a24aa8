"""What many test modules share: the fixture text, the tiny recipe, running the console scripts, reading
a run's metrics, and waiting on a process. Fixtures live in ``conftest.py``; this is plain functions
(the test-only callbacks are in ``callbacks.py``, running notebooks in ``notebooks.py``). No test module
imports another: what two of them need is here."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt import CONFIG_DIR

if TYPE_CHECKING:
    from nanogpt.training.spec import RunSpec

LINES = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak.",
    "First Citizen: You are all resolved rather to die than to famish?",
    "All: Resolved. resolved.",
    "Second Citizen: Would you proceed especially against Caius Marcius?",
    "MENENIUS: What work's, my countrymen, in hand? where go you",
    "With bats and clubs? the matter? speak, I pray you.",
    "ROMEO: But, soft! what light through yonder window breaks?",
    "JULIET: O Romeo, Romeo! wherefore art thou Romeo?",
]


def make_text(n_lines: int = 600, seed: int = 0) -> str:
    """A small learnable corpus: fixed lines in a seeded random order."""
    rng = random.Random(seed)
    return "\n".join(rng.choice(LINES) for _ in range(n_lines)) + "\n"


# a 40-step run of the 2-layer, 32-wide model on the CPU: the recipe of most tests
TINY = [
    "model=gpt_tiny",
    "trainer=cpu",
    "trainer.max_steps=40",
    "trainer.val_check_interval=20",
    "trainer.log_every_n_steps=1",
    "data.batch_size=8",
    "data.eval_batches=2",
    "scheduler.warmup_steps=5",
    "optimizer.lr=3e-3",
]

# what configs/hparams_search/shakespeare_char_cpu_optim.yaml searches over
CPU_SEARCHED_KEYS = {
    "optimizer.lr",
    "scheduler.warmup_steps",
    "optimizer.weight_decay",
    "scheduler.min_lr_ratio",
}

# what configs/hparams_search/shakespeare_optuna.yaml searches over
SEARCHED_KEYS = {
    "optimizer.lr",
    "scheduler.warmup_steps",
    "optimizer.weight_decay",
    "model.dropout",
    "model.n_embd",
    "model.n_layer",
}


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """``configs/train.yaml`` with ``overrides``, as ``nanogpt-train`` composes it (no Hydra section)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides or [])


def override(cfg: DictConfig, **values: object) -> DictConfig:
    """``cfg`` with ``group__key=value`` set as ``group.key=value`` on the command line would (in place)."""
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


def derived(cfg: DictConfig, vocab_size: int = 65, **found: object) -> RunSpec:
    """The spec :func:`~nanogpt.training.spec.derive_spec` makes of ``cfg`` for a run on a corpus of
    ``vocab_size`` tokens, without preparing any data; ``found``: more of what the run found
    (:class:`~nanogpt.training.spec.Prepared`'s fields, e.g. ``pretrained_shape``, ``resumed``)."""
    from nanogpt.data import Corpus, CorpusMeta
    from nanogpt.model import GPTConfig
    from nanogpt.training.spec import Prepared, derive_spec, model_fields

    model = GPTConfig(**model_fields(cfg.model, found.get("pretrained_shape"), vocab_size))
    counts = dict(documents=1, train_chars=0, val_chars=0, train_tokens=0, val_tokens=0)
    meta = CorpusMeta(1, "0" * 64, "no corpus: a test's", {"kind": "char"}, "uint16", 0.1, **counts)
    return derive_spec(cfg, Prepared(model=model, corpus=Corpus(Path("unprepared"), meta), **found))


def run_cli(
    name: str, args: list[str], cwd: Path, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run one of the package's console scripts (``nanogpt-train``, ...) as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    exe = Path(sys.executable).with_name(name)
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``command`` with its output in ``cwd/stdout.txt`` and ``cwd/stderr.txt``: a pipe nobody
    reads fills up and blocks the child, and Lightning's progress bar writes to stdout without newlines."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with (cwd / "stdout.txt").open("w") as stdout, (cwd / "stderr.txt").open("w") as stderr:
        # a shell may start background jobs with SIGINT ignored; the child must see Ctrl-C as a user's would
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    proc.cwd = cwd  # where wait_until finds its stderr.txt
    return proc


def wait_until(
    ready: Callable[[], object], what: str, proc: subprocess.Popen | None = None, timeout: float = 180
) -> object:
    """Poll ``ready()`` until it returns something true, and return that.

    Fails naming ``what`` after ``timeout`` seconds, or at once when ``proc`` has exited (for a
    process from :func:`start`, with the end of its ``stderr.txt``).
    """
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        if proc is not None and proc.poll() is not None:
            stderr = Path(getattr(proc, "cwd", ".")) / "stderr.txt"
            tail = stderr.read_text()[-3000:] if stderr.is_file() else ""
            raise AssertionError(f"{what} never happened: the process exited with {proc.returncode}\n{tail}")
        assert time.monotonic() < deadline, f"{what} never happened in {timeout:.0f} s"
        time.sleep(0.05)
    return found


def free_port() -> int:
    """A TCP port of this machine that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strict_json(path: Path) -> dict:
    """A JSON file that must be strict JSON: ``NaN`` or ``Infinity`` in it fails the test."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path} is not strict JSON: {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def read_metrics(run: Path) -> list[dict[str, str]]:
    """The rows of a run's ``csv/metrics.csv``."""
    with open(run / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every row that logged ``key``."""
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# the tiny recipe, shortened for sweeps: a job trains for 10 steps, validates twice and scores BLEU on
# 4 prompts
SWEEP = [
    *TINY,
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "callbacks.bleu.num_prompts=4",
    "callbacks.bleu.prompt_tokens=16",
    "callbacks.bleu.continuation_tokens=16",
    "paths.root_dir=.",
]


def sweep(
    tmp_path: Path, text_path: Path, *args: str, base: list[str] = SWEEP, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``nanogpt-train -m`` of the sweep recipe on ``text_path``, in ``tmp_path``."""
    command = ["-m", *base, f"data.path={text_path}", *args]
    return run_cli("nanogpt-train", command, cwd=tmp_path, timeout=600, env=env)


def sweep_dirs(tmp_path: Path, name: str) -> list[Path]:
    """The sweep folders of experiment ``name`` under ``tmp_path/runs``."""
    root = tmp_path / "runs" / name
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def isolate_wandb(monkeypatch, folder: Path) -> Path:
    """No W&B credentials, no user settings, and every file wandb writes inside ``folder``; returns the
    ``$HOME`` it gets (empty: no ~/.netrc, no ~/.config/wandb). ``monkeypatch`` undoes it."""
    import wandb

    wandb.teardown()  # wandb reads its environment once per process; make it read this one
    for name in [k for k in os.environ if k.startswith("WANDB_")] + ["NETRC"]:
        monkeypatch.delenv(name, raising=False)
    home = folder / "home"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ["WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"]:
        monkeypatch.setenv(name, str(folder / "wandb-home" / name.lower()))
    # the system monitor and console capture only cost the test time
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")
    monkeypatch.setenv("WANDB_X_SAVE_REQUIREMENTS", "false")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def read_offline_run(run_dir: Path) -> dict:
    """The run record, config, history rows, final summary and artifacts of an offline W&B run.

    wandb 0.31 writes no ``wandb-summary.json`` or ``config.yaml`` offline: the run's ``run-<id>.wandb``
    log, which ``wandb sync`` uploads, is its only record. W&B's documented reader for it is the CLI
    ``wandb leet inspect``: ``--summary --json`` gives the final config and summary, ``--json`` one line
    per record (run, history, artifact...) laid out as wandb's own protobuf records.
    """
    import wandb

    wandb.teardown()  # wandb-core may still be writing the file after run.finish() returns
    state = json.loads(_wandb_leet_inspect(run_dir, "--summary"))
    records = [json.loads(line) for line in _wandb_leet_inspect(run_dir).splitlines()]
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    return {
        "run": run,
        "config": state["config"],
        "history": history,
        "summary": state["summary"],
        "artifacts": artifacts,
    }


def _wandb_leet_inspect(run_dir: Path, *flags: str) -> str:
    exe = Path(sys.executable).with_name("wandb")
    # WANDB_MODE=offline: otherwise wandb-core looks W&B's server up before it exits
    env = {**os.environ, "WANDB_MODE": "offline"}
    result = subprocess.run(
        [str(exe), "leet", "inspect", "--json", *flags, str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"`wandb leet inspect` could not read {run_dir}: {result.stderr[-2000:]}"
    return result.stdout
