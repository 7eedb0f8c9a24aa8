"""nanogpt-train against karpathy/nanoGPT's train.py on the CPU recipe: whole commands, side by side.

    git clone https://github.com/karpathy/nanoGPT ~/nanoGPT
    python scripts/benchmark_nanogpt.py --nanogpt ~/nanoGPT --repeats 3
    python scripts/benchmark_nanogpt.py --nanogpt ~/nanoGPT --repeats 3 --out runs/vs_nanogpt   # runs kept

Four commands, each run ``--repeats`` times in turn (one of each, then again), each timed as a whole
process, start-up included:

- nanoGPT, eager: ``train.py config/train_shakespeare_char.py`` with its README's CPU flags
  (``--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
  --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``);
- nanoGPT, compiled: the same with ``--compile=True``, its Inductor cache warmed by one untimed run
  first (the fair peer of a warm cache);
- ``nanogpt-train experiment=shakespeare_char_cpu``, cold cache: ``compile_cache_dir`` a new empty
  folder each time, so ``compile=auto`` finds nothing compiled on this machine;
- the same, warm cache: the folder one untimed ``compile=true`` run filled first. That run's wall
  time is printed too: what compiling from nothing costs.

nanoGPT's data is prepared from the same text (its ``prepare.py`` downloads ``input.txt`` only when
it is missing) in a copy of its files under ``--out``; the checkout is not touched. The val loss of
nanoGPT is the one it prints at its last step (20 batches); nanogpt-train's is ``final_val_loss``
(best.ckpt on the whole val split), with its ``best_val_loss`` (20 batches) beside it.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = str(Path(sys.executable).with_name("nanogpt-train"))
EXPERIMENT = "shakespeare_char_cpu"
# nanoGPT's README, "I only have a macbook" (its CPU command)
NANOGPT_CPU_FLAGS = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")
EVAL_LINE = re.compile(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def timed(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> float:
    """Run ``command`` to its end, its output in ``log``; its wall seconds. A failure stops the benchmark."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"{' '.join(command)} failed (exit {done.returncode}); see {log}:\n{log.read_text()[-2000:]}"
        )
    return seconds


def prepare_nanogpt(checkout: Path, out: Path, text: Path | None) -> Path:
    """A copy of nanoGPT's files with its shakespeare_char data prepared from ``text``."""
    copy = out / "nanoGPT"
    for name in NANOGPT_FILES:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(checkout / name, copy / name)
    data = copy / "data" / "shakespeare_char"
    data.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkout / "data" / "shakespeare_char" / "prepare.py", data)
    if text is not None:
        shutil.copy(text, data / "input.txt")
    timed([sys.executable, "prepare.py"], out / "nanogpt_prepare.log", data, dict(os.environ))
    return copy


def nanogpt_val(log: Path) -> float:
    """The val loss nanoGPT printed at its last evaluation."""
    found = EVAL_LINE.findall(log.read_text())
    if not found:
        sys.exit(f"no 'step N: train loss X, val loss Y' line in {log}")
    return float(found[-1][2])


def ours_val(run: Path) -> tuple[float, float]:
    record = json.loads((run / "result.json").read_text())
    return record["final_val_loss"], record["best_val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a new temporary folder)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every nanogpt-train run")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="nanogpt-vs-nanoGPT-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    text = Path(env["NANOGPT_SHAKESPEARE_PATH"]) if env.get("NANOGPT_SHAKESPEARE_PATH") else None
    nanogpt = prepare_nanogpt(args.nanogpt.expanduser().resolve(), out, text)
    commit = subprocess.run(
        ["git", "-C", str(args.nanogpt), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    nanogpt_env = {**env, "TORCHINDUCTOR_CACHE_DIR": str(out / "nanoGPT-inductor-cache")}
    warm_cache = out / "warm-cache"

    def nanogpt_cmd(compiled: bool, i: str) -> list[str]:
        return [sys.executable, "train.py", *NANOGPT_CPU_FLAGS, f"--compile={compiled}", f"--out_dir=out-{i}"]

    def ours_cmd(cache: Path, run: Path, *extra: str) -> list[str]:
        settings = [f"experiment={EXPERIMENT}", f"compile_cache_dir={cache}", f"hydra.run.dir={run}"]
        return [TRAIN, *settings, *extra, *args.overrides]

    # the untimed runs that warm each compiled command's cache
    print("warming nanoGPT's compile cache (untimed)", flush=True)
    timed(nanogpt_cmd(True, "warmup"), out / "nanoGPT-compiled-warmup.log", nanogpt, nanogpt_env)
    print("compiling nanogpt-train's training step from nothing (untimed in the table)", flush=True)
    cold_compile = timed(
        ours_cmd(warm_cache, out / "ours-warmup", "compile=true"), out / "ours-warmup.log", out, env
    )
    print(f"  nanogpt-train compile=true, empty cache: {cold_compile:.0f} s", flush=True)

    rows = {
        "nanoGPT train.py --compile=False": ([], []),
        "nanoGPT train.py --compile=True (warm Inductor cache)": ([], []),
        "nanogpt-train, cold compile cache (compile=auto)": ([], []),
        "nanogpt-train, warm compile cache (compile=auto)": ([], []),
    }
    names = list(rows)
    for r in range(args.repeats):
        for name in names:
            i = f"{r}"
            if name.startswith("nanoGPT"):
                compiled = "True" in name
                log = out / f"nanoGPT-{'compiled' if compiled else 'eager'}-{i}.log"
                seconds = timed(nanogpt_cmd(compiled, i), log, nanogpt, nanogpt_env)
                loss = f"{nanogpt_val(log):.4f} (step 2000, 20 batches)"
            else:
                cold = "cold" in name
                cache = out / f"cold-cache-{i}" if cold else warm_cache
                run = out / f"ours-{'cold' if cold else 'warm'}-{i}"
                seconds = timed(ours_cmd(cache, run), run.with_suffix(".log"), out, env)
                final, best = ours_val(run)
                loss = f"{final:.4f} (whole val split; {best:.4f} on 20 batches)"
            rows[name][0].append(seconds)
            rows[name][1].append(loss)
            print(f"repeat {r + 1}: {name}: {seconds:.1f} s, val {loss}", flush=True)

    eager = statistics.median(rows[names[0]][0])
    compiled = statistics.median(rows[names[1]][0])
    cpus = os.cpu_count()
    print(f"\nshakespeare_char_cpu, whole commands, {args.repeats} repeats alternating, {cpus} CPUs")
    print(f"nanoGPT {commit}; nanogpt-train compile=true from an empty cache took {cold_compile:.0f} s")
    print("| command | wall s, median (min-max) | vs nanoGPT eager | vs nanoGPT compiled | val loss (each) |")
    print("|---|---|---|---|---|")
    for name, (seconds, losses) in rows.items():
        median = statistics.median(seconds)
        print(
            f"| {name} | {median:.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | {median / eager:.3f}x "
            f"({min(seconds) / eager:.3f}-{max(seconds) / eager:.3f}) | {median / compiled:.3f}x | "
            f"{'; '.join(losses)} |"
        )
    print(f"runs kept in {out}")


if __name__ == "__main__":
    main()
