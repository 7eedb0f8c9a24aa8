"""nanogpt-train against karpathy/nanoGPT's train.py on the CPU recipe: whole commands, side by side.

    git clone https://github.com/karpathy/nanoGPT ~/nanoGPT
    python -m benchmarks vs_nanogpt --nanogpt ~/nanoGPT --repeats 3
    python -m benchmarks vs_nanogpt --nanogpt ~/nanoGPT --repeats 3 --out runs/vs_nanogpt   # runs kept

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

import os
import re
import sys
from pathlib import Path

from benchmarks import nanogpt_ref, text
from benchmarks.process import output_folder, run
from benchmarks.stats import Spread, alternate
from benchmarks.suites import parser
from benchmarks.table import markdown
from benchmarks.train import train_command
from nanogpt.runs.folder import Result

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
# what nanoGPT's train.py prints at each evaluation
EVAL_LINE = re.compile(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)")

EAGER = "nanoGPT train.py --compile=False"
COMPILED = "nanoGPT train.py --compile=True (warm Inductor cache)"
COLD = "nanogpt-train, cold compile cache (compile=auto)"
WARM = "nanogpt-train, warm compile cache (compile=auto)"


def main(argv: list[str] | None = None) -> None:
    cli = parser("vs_nanogpt", __doc__)
    cli.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--out", type=Path, help="folder for the runs (default: a new temporary folder)")
    cli.add_argument("overrides", nargs="*", help="Hydra overrides for every nanogpt-train run")
    args = cli.parse_args(argv)
    checkout = args.nanogpt.expanduser().resolve()
    if why := nanogpt_ref.missing(checkout, nanogpt_ref.TRAIN_FILES):
        cli.error(why)
    out = output_folder(args.out, "nanogpt-vs-nanoGPT-")
    nanogpt = nanogpt_ref.copy(checkout, out / "nanoGPT", nanogpt_ref.TRAIN_FILES)
    nanogpt_ref.prepare(
        checkout, nanogpt, "shakespeare_char", text.shakespeare(None), out / "nanogpt_prepare.log"
    ).check()
    nanogpt_env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(out / "nanoGPT-inductor-cache")}
    warm_cache = out / "warm-cache"

    def nanogpt_cmd(compiled: bool, i: str) -> list[str]:
        return [sys.executable, "train.py", *NANOGPT_CPU_FLAGS, f"--compile={compiled}", f"--out_dir=out-{i}"]

    def ours_cmd(cache: Path, run_dir: Path, *extra: str) -> list[str]:
        return train_command(run_dir, f"compile_cache_dir={cache}", *extra, *args.overrides)

    # the untimed runs that warm each compiled command's cache
    print("warming nanoGPT's compile cache (untimed)", file=sys.stderr, flush=True)
    run(
        nanogpt_cmd(True, "warmup"), out / "nanoGPT-compiled-warmup.log", cwd=nanogpt, env=nanogpt_env
    ).check()
    print(
        "compiling nanogpt-train's training step from nothing (untimed in the table)",
        file=sys.stderr,
        flush=True,
    )
    warmup = ours_cmd(warm_cache, out / "ours-warmup", "compile=true")
    cold_compile = run(warmup, out / "ours-warmup.log", cwd=out).check().wall
    print(f"  nanogpt-train compile=true, empty cache: {cold_compile:.0f} s", file=sys.stderr, flush=True)

    def measure(name: str, r: int) -> tuple[float, str]:
        if name in (EAGER, COMPILED):
            compiled = name == COMPILED
            log = out / f"nanoGPT-{'compiled' if compiled else 'eager'}-{r}.log"
            done = run(nanogpt_cmd(compiled, str(r)), log, cwd=nanogpt, env=nanogpt_env).check()
            found = EVAL_LINE.findall(done.output)
            if not found:
                sys.exit(f"no 'step N: train loss X, val loss Y' line in {log}")
            return done.wall, f"{float(found[-1][2]):.4f} (step 2000, 20 batches)"
        cold = name == COLD
        cache = out / f"cold-cache-{r}" if cold else warm_cache
        run_dir = out / f"ours-{'cold' if cold else 'warm'}-{r}"
        done = run(ours_cmd(cache, run_dir), run_dir.with_suffix(".log"), cwd=out).check()
        result = Result.read(run_dir)
        return (
            done.wall,
            f"{result.final_val_loss:.4f} (whole val split; {result.best_val_loss:.4f} on 20 batches)",
        )

    rows = alternate(
        [EAGER, COMPILED, COLD, WARM], args.repeats, measure, show=lambda m: f"{m[0]:.1f} s, val {m[1]}"
    )
    eager = Spread.of(s for s, _ in rows[EAGER]).median
    compiled = Spread.of(s for s, _ in rows[COMPILED]).median
    print(
        f"\nshakespeare_char_cpu, whole commands, {args.repeats} repeats alternating, {os.cpu_count()} CPUs"
    )
    print(
        f"nanoGPT {nanogpt_ref.commit(checkout)}; nanogpt-train compile=true from an empty cache took "
        f"{cold_compile:.0f} s"
    )
    table = []
    for name, measured in rows.items():
        seconds = Spread.of(s for s, _ in measured)
        against_eager = Spread(seconds.median / eager, seconds.low / eager, seconds.high / eager)
        losses = "; ".join(loss for _, loss in measured)
        table.append(
            (name, seconds.text(1), against_eager.text(3, "x"), f"{seconds.median / compiled:.3f}x", losses)
        )
    columns = [
        "command",
        "wall s, median (min-max)",
        "vs nanoGPT eager",
        "vs nanoGPT compiled",
        "val loss (each)",
    ]
    print(markdown(columns, table))
    print(f"runs kept in {out}")
