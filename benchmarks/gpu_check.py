"""The GPU recipes on one GPU in one command: a markdown table of what ran and what it reached.

    python -m benchmarks gpu_check                              # the checks on one H100/H200 (aim: <= 8 min)
    python -m benchmarks gpu_check --nanogpt ~/nanoGPT          # also nanoGPT's own shakespeare_char run
    python -m benchmarks gpu_check --only gpt2,fsdp --out runs/gpu_check   # some checks, runs kept
    python -m benchmarks gpu_check --peak-flops 989.4e12        # MFU against a peak you give
    python -m benchmarks gpu_check --dry-run --out /tmp/check   # the same rows on the CPU at tiny shapes

One row per check:

- ``pytest``: ``pytest -m gpu tests/test_gpu.py`` (bf16-mixed, fused AdamW, compile, 200 recipe steps);
- ``shakespeare_char``: nanoGPT's ``train_shakespeare_char`` recipe, compiled, 5000 steps: the
  training time (``perf/train_s``, compile included) at which val/loss first reached 1.47, and the
  final val loss (``best.ckpt`` on the whole val split);
- ``nanogpt`` (with ``--nanogpt PATH``, a checkout of karpathy/nanoGPT): its ``train.py
  config/train_shakespeare_char.py`` on the same text, timed from the output lines as they arrive;
- ``gpt2``: GPT-2 124M at context 1024 on BPE Shakespeare, bf16-mixed, compiled, 100 steps:
  tokens/s and MFU against the bf16 dense peak of the GPU;
- ``fsdp``: ``trainer=fsdp model=gpt2_medium`` on one GPU for 20 steps: completes, tokens/s, peak memory.

Each check is its own process with its own timeout; its output (with the seconds since launch in
front of every line) and its run folder are kept in ``--out``. The training rows read what no logger
records (device, FLOPs per token, peak GPU memory) from :class:`benchmarks.probes.RunFacts`, a
callback on their command line. A check that fails to run is a row
saying what failed, with the last lines of its log, and makes the exit status 1; a target missed is
only "no" in the ``met?`` column.

``--dry-run`` runs the same commands on the CPU (``CUDA_VISIBLE_DEVICES=``) at tiny shapes, to check
the commands, the parsing and the table without a GPU: the GPU tests then skip, the targets are
not expected to be met, FSDP runs through ``tests/fsdp_on_cpu.py``'s strategy (Lightning refuses
FSDP on a CPU), and MFU is against a nominal 100 GFLOP/s unless ``--peak-flops`` gives one.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline (nanoGPT's data is prepared from it too).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import logged, nanogpt_ref, text
from benchmarks.process import ROOT, Run, console_script, output_folder, run
from benchmarks.suites import parser
from benchmarks.table import markdown
from nanogpt.runs.folder import Result, RunDir

# nanoGPT's train_shakespeare_char reaches 1.4697 in about 3 minutes on an A100
VAL_TARGET = 1.47
SECONDS_TARGET = 90.0
MFU_TARGET = 0.40
# bf16 dense peak FLOP/s of one GPU, by a piece of torch.cuda.get_device_name(), first match wins.
# Lightning's own table (what perf/mfu uses) has no "NVIDIA H200" and gives H200 SXM and H100 NVL
# the doubled figures of 2:4 sparsity.
PEAK_BF16 = (
    ("h200 nvl", 835.5e12),
    ("h200", 989.4e12),
    ("h100 pcie", 756e12),
    ("h100 80gb hbm3", 989.4e12),
    ("h100 sxm", 989.4e12),
    ("a100", 312e12),
)
DRY_RUN_PEAK = 1e11  # a nominal CPU peak, so the dry run's MFU is a number

# the tag before the JSON that benchmarks.probes.RunFacts prints when training ends
FACTS = "gpu_check probe: "

# what makes a training row a pure throughput run (python -m benchmarks train perf): no BLEU, one
# validation batch, no periodic checkpoints, rates over 10-step windows from step 0 (no warm-up)
PERF = [
    "callbacks.bleu=null",
    "data.eval_batches=1",
    "data.final_eval_batches=1",
    "logger=csv",
    "trainer.log_every_n_steps=10",
    "callbacks.throughput.window=10",
    "scheduler.warmup_steps=0",
    "callbacks.last_checkpoint.every_n_train_steps=null",
]
# the dry run's shapes: every training row on the CPU, float32, a 1-layer 32-wide model, 20 steps
TINY = [
    "trainer.precision=32-true",
    "compile=false",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "data.batch_size=4",
    "data.eval_batches=2",
    "data.final_eval_batches=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
    "callbacks.throughput.window=5",
    "scheduler.warmup_steps=0",
]
NANOGPT_TINY = [
    "--device=cpu",
    "--compile=False",
    "--dtype=float32",
    "--max_iters=20",
    "--lr_decay_iters=20",
    "--warmup_iters=0",
    "--eval_interval=10",
    "--eval_iters=2",
    "--log_interval=5",
    "--n_layer=1",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=4",
]


def facts(done: Run) -> dict:
    """What the RunFacts callback printed when training ended."""
    for _, line in done.lines:
        if line.startswith(FACTS):
            return json.loads(line.removeprefix(FACTS))
    raise ValueError(f"no '{FACTS.strip()}' line in {done.log}")


@dataclass
class Row:
    check: str
    command: str
    target: str
    result: str = ""
    met: str = ""  # yes, no, unknown (ran, but the target cannot be judged), skipped, or failed

    @property
    def failed(self) -> bool:
        return self.met == "failed"


def last_wins(overrides: list[str]) -> list[str]:
    """``overrides`` with each key once, at its last value (Hydra refuses a key given twice)."""
    by_key = {o.split("=", 1)[0].lstrip("+"): o for o in overrides}
    return list(by_key.values())


def yes(condition: bool) -> str:
    return "yes" if condition else "no"


def peak_flops_of(device: str, given: float | None, dry_run: bool) -> tuple[float | None, str]:
    """The peak FLOP/s MFU is measured against, and what it is."""
    if given:
        return given, f"{given / 1e12:,.1f} TFLOP/s (--peak-flops)"
    if dry_run:
        return DRY_RUN_PEAK, f"a nominal CPU peak of {DRY_RUN_PEAK / 1e9:.0f} GFLOP/s (dry run)"
    for piece, flops in PEAK_BF16:
        if piece in device.lower():
            return flops, f"{flops / 1e12:,.1f} TFLOP/s, the {device}'s bf16 dense peak"
    return None, device


def size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


# name -> (check, command, target) of its row; the commands as a user would type them (every
# override each check adds is in the first line of its log)
ROWS = {
    "pytest": ("GPU tests", "`pytest -m gpu tests/test_gpu.py`", "0 failed"),
    "shakespeare_char": (
        "baby GPT (shakespeare_char)",
        "`nanogpt-train experiment=shakespeare_char trainer.max_steps=5000 compile=true callbacks.bleu=null`",
        "val ≤ {val} within {seconds:.0f} s of training",
    ),
    "nanogpt": (
        "nanoGPT's own run",
        "`python train.py config/train_shakespeare_char.py` (karpathy/nanoGPT, compile=True)",
        "val ≤ {val} within {seconds:.0f} s of training",
    ),
    "gpt2": (
        "GPT-2 124M throughput",
        "`nanogpt-train experiment=shakespeare model=gpt2 data.batch_size=16 trainer.precision=bf16-mixed "
        "compile=true trainer.max_steps=100`",
        "MFU ≥ {mfu:.0%}",
    ),
    "fsdp": (
        "FSDP, GPT-2 medium, 1 GPU",
        "`nanogpt-train experiment=shakespeare trainer=fsdp model=gpt2_medium trainer.devices=1 "
        "data.batch_size=16 trainer.max_steps=20`",
        "20 steps complete",
    ),
}


class Checks:
    """The checks, each filling in its row from the processes it runs; the settings they share."""

    def __init__(
        self, out: Path, dry_run: bool, peak_flops: float | None, val_target: float, nanogpt: Path | None
    ) -> None:
        self.out = out
        self.dry_run = dry_run
        self.peak_flops = peak_flops
        self.val_target = val_target
        self.nanogpt_checkout = nanogpt
        # lines arrive when printed, so their times are true
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if dry_run:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a machine with a GPU
        self.timeout = 120.0 if dry_run else None

    def train(
        self, name: str, overrides: list[str], timeout: float, on_cpu: tuple[str, ...] = ("trainer=cpu",)
    ) -> Run:
        """``nanogpt-train`` with ``overrides`` into ``<out>/<name>``, the data prepared in ``<out>/data``;
        in a dry run, at the tiny shapes with ``on_cpu`` (how this row runs on the CPU) on top."""
        overrides = [*overrides, f"hydra.run.dir={self.out / name}", f"paths.data_dir={self.out / 'data'}"]
        overrides.append("+callbacks.gpu_check._target_=benchmarks.probes.RunFacts")
        if self.dry_run:
            overrides = last_wins([*overrides, *TINY, *on_cpu])
        command = [console_script("nanogpt-train"), *overrides]
        return run(command, self.out / f"{name}.log", env=self.env, cwd=ROOT, timeout=self.timeout or timeout)

    def pytest(self, row: Row) -> None:
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-n", "0", "-q"]
        done = run(command, self.out / "pytest.log", env=self.env, cwd=ROOT, timeout=self.timeout or 240)
        summary = next(
            (line for _, line in reversed(done.lines) if re.search(r"\d+ \w+.* in [\d.]+s", line)), None
        )
        # 0: all passed, 1: some failed; anything else (usage, collection, internal error) did not run
        if done.returncode not in (0, 1) or done.timed_out or summary is None:
            row.result, row.met = done.failure(), "failed"
            return
        counts = {kind.rstrip("s"): int(n) for n, kind in re.findall(r"(\d+) ([a-z]+)", summary)}
        passed, failed, skipped, errors = (counts.get(k, 0) for k in ("passed", "failed", "skipped", "error"))
        row.result = f"{passed} passed, {failed} failed, {skipped} skipped"
        row.result += f", {errors} errors" if errors else ""
        row.result += f" in {done.wall:.0f} s"
        row.met = yes(failed == 0 and errors == 0 and passed + skipped > 0)

    def shakespeare_char(self, row: Row) -> None:
        overrides = ["experiment=shakespeare_char", "trainer.max_steps=5000", "compile=true"]
        # BLEU's sampling at every validation is no part of nanoGPT's recipe, and would count as training time
        overrides += ["callbacks.bleu=null", "logger=csv", "trainer.devices=1"]
        done = self.train("shakespeare_char", overrides, 300)
        if not done.ok:
            row.result, row.met = done.failure(), "failed"
            return
        run_dir = self.out / "shakespeare_char"
        metrics = logged.metrics(run_dir)
        result = Result.read(run_dir)
        # perf/train_s: seconds since training started (compile and earlier validations included),
        # logged on the loggers' steps, which the validations' steps are among
        train_s = {int(r["step"]): float(r["perf/train_s"]) for r in metrics if r.get("perf/train_s")}
        vals = [(int(r["step"]), float(r["val/loss"])) for r in metrics if r.get("val/loss")]
        launch = {
            int(m[1]): t for t, line in done.lines if (m := re.match(r"step (\d+)/\d+\s+val/loss", line))
        }
        end = (
            f"final val {result.final_val_loss:.4f} (best.ckpt, whole val split), best "
            f"{result.best_val_loss:.4f}; {result.step} steps in {max(train_s.values()):.1f} s"
        )
        reached = next((step for step, loss in vals if loss <= self.val_target), None)
        if reached is None:
            row.result, row.met = f"val never ≤ {self.val_target}; {end}", "no"
            return
        seconds = train_s[reached]
        row.result = (
            f"val ≤ {self.val_target} at step {reached}, {seconds:.1f} s of training "
            f"({launch[reached]:.0f} s from launch); {end}"
        )
        row.met = yes(seconds <= SECONDS_TARGET)

    def nanogpt(self, row: Row) -> None:
        checkout = self.nanogpt_checkout
        if checkout is None:
            row.result, row.met = "not run: pass --nanogpt PATH (a checkout of karpathy/nanoGPT)", "skipped"
            return
        # prepare.py downloads input.txt only when it is missing: give it the text the other rows
        # train on (NANOGPT_SHAKESPEARE_PATH, else what the shakespeare_char row downloaded)
        here = nanogpt_ref.copy(checkout, self.out / "nanogpt", nanogpt_ref.TRAIN_FILES)
        downloaded = self.out / "data" / "shakespeare_char" / "input.txt"
        shakespeare = text.shakespeare(None) or (downloaded if downloaded.is_file() else None)
        log = self.out / "nanogpt_prepare.log"
        prepared = nanogpt_ref.prepare(checkout, here, "shakespeare_char", shakespeare, log, timeout=120)
        if not prepared.ok:
            row.result, row.met = prepared.failure(), "failed"
            return
        argv = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--out_dir={here / 'out'}"]
        if self.dry_run:
            argv += NANOGPT_TINY
        done = run(argv, self.out / "nanogpt.log", env=self.env, cwd=here, timeout=self.timeout or 300)
        evals = [
            (t, int(m[1]), float(m[2]))
            for t, line in done.lines
            if (m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line))
        ]
        if not done.ok or not evals:
            row.result, row.met = done.failure(), "failed"
            return
        # its clock starts at the step-0 evaluation, which comes before any training step, as
        # perf/train_s starts at the first (both then include the compile of the training step)
        t0 = evals[0][0]
        end = f"best val {min(v for _, _, v in evals):.4f}, last {evals[-1][2]:.4f} at step {evals[-1][1]}"
        reached = next(((t, step) for t, step, loss in evals if loss <= self.val_target), None)
        if reached is None:
            row.result, row.met = f"val never ≤ {self.val_target}; {end}", "no"
            return
        t, step = reached
        row.result = (
            f"val ≤ {self.val_target} at step {step}, {t - t0:.1f} s after its step-0 eval "
            f"({t:.0f} s from launch); {end}"
        )
        row.met = yes(t - t0 <= SECONDS_TARGET)

    def gpt2(self, row: Row) -> None:
        overrides = ["experiment=shakespeare", "model=gpt2", "data.batch_size=16", "trainer.devices=1"]
        overrides += ["trainer.precision=bf16-mixed", "compile=true", "trainer.max_steps=100", *PERF]
        # one validation, at the end; no checkpoint files (1.5 GB each), so no final validation either
        # (with neither checkpoint callback, Lightning would add its own ModelCheckpoint)
        overrides += ["trainer.val_check_interval=100", "callbacks.model_checkpoint=null"]
        overrides += ["callbacks.last_checkpoint=null", "+trainer.enable_checkpointing=false"]
        done = self.train("gpt2", overrides, 240)
        if not done.ok:
            row.result, row.met = done.failure(), "failed"
            return
        metrics = logged.metrics(self.out / "gpt2")
        steps = max(int(r["step"]) for r in metrics)
        tokens = logged.median_after_first_window(metrics, "perf/tokens_per_s")
        probed = facts(done)
        flops, peak = peak_flops_of(probed["device"], self.peak_flops, self.dry_run)
        row.result = (
            f"{tokens:,.0f} tokens/s over {steps} steps, {probed['flops_per_token'] / 1e6:.0f}M FLOPs/token"
        )
        if flops is None:
            row.result += f"; MFU unknown: no peak FLOP/s for {peak} (pass --peak-flops)"
            row.met = "unknown"
        else:
            mfu = tokens * probed["flops_per_token"] / flops
            row.result += f"; MFU {mfu:.1%} of {peak}"
            row.met = yes(mfu >= MFU_TARGET)
        lightning = logged.median_after_first_window(metrics, "perf/mfu")
        if lightning is not None:
            row.result += f"; Lightning's perf/mfu {lightning:.1%}"

    def fsdp(self, row: Row) -> None:
        overrides = ["experiment=shakespeare", "trainer=fsdp", "model=gpt2_medium", "trainer.devices=1"]
        overrides += ["data.batch_size=16", "trainer.max_steps=20", *PERF, "trainer.val_check_interval=20"]
        # last.ckpt at the end (FSDP gathers the whole state into one file); no best.ckpt, whose final
        # validation would load it back
        overrides += ["callbacks.model_checkpoint=null"]
        # Lightning refuses FSDP on a CPU; the tests' subclass runs it there (tests/fsdp_on_cpu.py)
        on_cpu = ("trainer.accelerator=cpu", "trainer.strategy._target_=tests.fsdp_on_cpu.FSDPOnCPU")
        done = self.train("fsdp", overrides, 180, on_cpu)
        if not done.ok:
            row.result, row.met = done.failure(), "failed"
            return
        run_dir = self.out / "fsdp"
        result = Result.read(run_dir)
        tokens = logged.median_after_first_window(logged.metrics(run_dir), "perf/tokens_per_s")
        probed = facts(done)
        memory = (
            f"peak GPU memory {size(probed['peak_gpu_bytes'])} allocated"
            if probed["peak_gpu_bytes"] is not None
            else f"peak RSS {size(done.peak_rss_mib * 2**20)} (no GPU)"
        )
        last = RunDir.at(run_dir).last
        saved = f"last.ckpt {size(last.stat().st_size)}" if last.is_file() else "no last.ckpt"
        how = " on the CPU through tests/fsdp_on_cpu.py's FSDPOnCPU" if self.dry_run else ""
        row.result = f"{result.status} at step {result.step}{how}; {tokens:,.0f} tokens/s; {memory}; {saved}"
        row.met = yes(result.status == "completed" and result.step == 20)


def main(argv: list[str] | None = None) -> None:
    cli = parser("gpu_check", __doc__)
    cli.add_argument(
        "--out", type=Path, help="folder for the logs and runs (default: a new temporary folder)"
    )
    cli.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT, for its own run")
    cli.add_argument("--peak-flops", type=float, help="peak bf16 FLOP/s of the GPU, for MFU")
    cli.add_argument("--only", default=",".join(ROWS), help=f"checks to run, of {','.join(ROWS)}")
    cli.add_argument(
        "--val-target", type=float, default=VAL_TARGET, help="the val loss the shakespeare_char rows time"
    )
    cli.add_argument("--dry-run", action="store_true", help="the same rows on the CPU at tiny shapes")
    args = cli.parse_args(argv)
    only = [name.strip() for name in args.only.split(",")]
    unknown = sorted(set(only) - set(ROWS))
    if unknown:
        cli.error(f"--only {','.join(unknown)}: no such check; choose from {','.join(ROWS)}")
    if args.nanogpt is not None and (why := nanogpt_ref.missing(args.nanogpt, nanogpt_ref.TRAIN_FILES)):
        cli.error(why)
    out = output_folder(args.out, "nanogpt-gpu-check-")

    nanogpt = args.nanogpt.resolve() if args.nanogpt else None
    checks = Checks(out, args.dry_run, args.peak_flops, args.val_target, nanogpt)
    rows = []
    start = time.perf_counter()
    for name, (check, command, target) in ROWS.items():
        if name not in only:
            continue
        print(f"[{time.perf_counter() - start:4.0f} s] {name} ...", file=sys.stderr, flush=True)
        row = Row(check, command, target.format(val=args.val_target, seconds=SECONDS_TARGET, mfu=MFU_TARGET))
        try:
            getattr(checks, name)(row)
        except Exception as err:  # its run did not leave what the row reads: say so, run the rest
            row.result, row.met = f"failed: {type(err).__name__}: {err} (logs in {out})", "failed"
        rows.append(row)
    mode = "a dry run on the CPU at tiny shapes" if args.dry_run else "one GPU"
    print(f"\nGPU check, {mode}: {time.perf_counter() - start:.0f} s; logs and runs in {out}\n")
    cells = [(r.check, r.command, r.result, r.target, r.met) for r in rows]
    print(markdown(["check", "command", "result", "target", "met?"], cells))
    sys.exit(1 if any(r.failed for r in rows) else 0)
