"""One way to run and time a command: wall time, peak memory from the kernel, and its output kept.

Every benchmark process goes through :func:`run`, so every table times the same thing: from the
start of the process to its exit, start-up included.

- **Wall time**: ``time.perf_counter`` from just before the process starts to ``wait4`` returning.
- **Peak RSS**: ``ru_maxrss`` of the ``wait4`` that reaps it (the largest resident set of the process
  or of any child it waited for), read from the kernel after the fact: nothing polls it.
- **Output**: stdout and stderr together, each line kept with the seconds since launch at which it
  arrived, and written to ``log`` (the command on its first line). A benchmark reads what a run
  printed from :attr:`Run.lines`.
- **Memory of a process tree** (``sample_memory=True``): PSS of the process and its descendants,
  sampled from ``/proc`` every 50 ms, for commands whose workers hold memory of their own.

Children run with the repository root on ``PYTHONPATH`` (:func:`environment`): that is how
``nanogpt-train`` finds the probes a benchmark gives it on the command line
(``+callbacks.x._target_=benchmarks.probes.X``) and ``tests.fsdp_on_cpu``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_EVERY_S = 0.05


def console_script(name: str) -> str:
    """The path of one of nanogpt's console scripts (``nanogpt-train``, ...) in this interpreter's venv."""
    return str(Path(sys.executable).with_name(name))


def output_folder(keep: Path | None, prefix: str) -> Path:
    """``keep`` (``--out``), or else a new temporary folder: where a benchmark's runs and logs go."""
    folder = (keep or Path(tempfile.mkdtemp(prefix=prefix))).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def environment(env: dict[str, str] | None = None, **changes: str) -> dict[str, str]:
    """``env`` (default: this process's) with ``changes``, and the repository root last on ``PYTHONPATH``.

    Last, so that a ``PYTHONPATH`` given to import nanogpt from another checkout still wins.
    """
    env = {**(os.environ if env is None else env), **changes}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH"), str(ROOT)] if p)
    return env


@dataclass
class Run:
    """One finished process: its exit status, wall seconds and peak RSS, and each output line with
    the seconds since launch at which it arrived."""

    command: list[str]
    log: Path | None
    returncode: int
    started: float  # time.time() at launch, to set against times other processes wrote down
    wall: float
    lines: list[tuple[float, str]]
    peak_rss_mib: float
    timed_out: bool
    peak_tree: dict[str, float] = field(default_factory=dict)  # with sample_memory: memory_mib's peaks

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def tail(self, n: int = 4) -> str:
        text = [line.strip() for _, line in self.lines if line.strip()]
        return " / ".join(text[-n:])[-400:]

    def failure(self) -> str:
        why = f"timed out after {self.wall:.0f} s" if self.timed_out else f"exit {self.returncode}"
        return f"failed ({why}; {self.log}): {self.tail()}"

    def check(self) -> Run:
        """This run, if it succeeded; else the benchmark stops, naming the command and its last lines."""
        if not self.ok:
            sys.exit(f"{shlex.join(self.command)} {self.failure()}")
        return self


def run(
    command: list[str],
    log: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    sample_memory: bool = False,
) -> Run:
    """Run ``command`` to its end; see the module's docstring for what is measured.

    The command gets its own process group, so that a timeout also ends the processes it started
    (DataLoader workers, compile workers).
    """
    lines: list[tuple[float, str]] = []
    timed_out = threading.Event()
    started, start = time.time(), time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):  # it ended just now
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.daemon = True  # never what keeps a benchmark from exiting
        timer.start()
    peaks: dict[str, float] = {}
    sampler = threading.Thread(target=_sample_tree, args=(proc, peaks), daemon=True)
    if sample_memory:
        sampler.start()
    # line-buffered, so that a log can be followed while its command runs
    with open(log, "w", buffering=1) if log else contextlib.nullcontext() as f:
        if f:
            f.write(f"$ {shlex.join(command)}\n")
        for line in proc.stdout:
            seconds = time.perf_counter() - start
            lines.append((seconds, line.rstrip("\n")))
            if f:
                f.write(f"{seconds:8.2f}  {line}")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if timer:
        timer.cancel()
    if sample_memory:
        sampler.join()
    return Run(
        command, log, proc.returncode, started, wall, lines, usage.ru_maxrss / 1024, timed_out.is_set(), peaks
    )  # ru_maxrss is in KiB on Linux


def _sample_tree(proc: subprocess.Popen, peaks: dict[str, float]) -> None:
    while proc.poll() is None:
        for key, value in memory_mib(proc.pid).items():
            peaks[key] = max(peaks.get(key, 0.0), value)
        time.sleep(SAMPLE_EVERY_S)


def memory_mib(root: int) -> dict[str, float]:
    """Memory of ``root`` and its descendants in MiB, from /proc: PSS (each shared page split
    between its sharers, so forked workers are not counted twice), its anonymous part (what the
    processes allocated: file pages of memory-mapped Arrow and token files are the kernel's cache,
    which it drops under pressure), and the RSS of ``root`` alone."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        except OSError:
            continue
    pss = pss_anon = rss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            fields = dict(
                line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
            )
        except OSError:
            continue
        kib = {k: int(v.split()[0]) for k, v in fields.items()}
        pss += kib.get("Pss", 0)
        pss_anon += kib.get("Pss_Anon", 0)
        rss += kib.get("Rss", 0) if pid == root else 0
    return {"pss": pss / 1024, "pss_anon": pss_anon / 1024, "rss_main": rss / 1024}
