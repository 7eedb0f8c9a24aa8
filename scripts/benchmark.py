"""Benchmark nanogpt-train: the CPU recipe against a plain PyTorch loop, and speed on this device.

``compare`` (the default) runs the shakespeare_char_cpu recipe as nanogpt-train and as a plain
PyTorch loop; ``perf`` measures tokens/s, step time and MFU for precision x compile.

Both runs train the same model on the same batches with the same optimizer, schedule, clipping,
evaluation and best-checkpoint saving; the only difference is Lightning and Hydra around the loop.
Each is timed as a whole command, start-up included, in its own process, and its peak RSS is read
from the kernel. The final model of each is then scored on the *whole* val split.

    python scripts/benchmark.py                      # both, then the table
    python scripts/benchmark.py --repeats 3          # alternate the two, report the median
    git worktree add /tmp/before main && python scripts/benchmark.py --repeats 3 --no-plain \\
        --baseline-src /tmp/before                   # this code against another checkout's
    python scripts/benchmark.py plain --out DIR      # only the plain loop (used by the above)
    python scripts/benchmark.py perf                 # precision x compile on this device's recipe
    python scripts/benchmark.py perf --experiment shakespeare model=gpt2 data.batch_size=16
                                                     # GPT-2 124M at context 1024
    python scripts/benchmark.py perf --peak-flops 1.5e11   # MFU against a peak you give (CPUs)
    python scripts/benchmark.py settings --repeats 3 # torch threads, DataLoader workers, pinned memory
    python scripts/benchmark.py profile --repeats 3  # where the time goes: start-up, and each part of a step

``perf`` trains each combination for ``--steps`` optimizer steps in its own nanogpt-train process
and reports the median of the ``perf/*`` values its loggers got after the first window (so compile
time and warm-up are left out), with the FLOPs the model needs per second.

``profile`` times the start-up of both (whole processes, and ``python -X importtime`` for the
largest imports), then each part of a training step in both loops, alternating ``--repeats`` times.

``settings`` trains the CPU recipe for ``--steps`` steps under each candidate default (torch's
intra-op threads, a DataLoader worker, pinned memory), alternating them ``--repeats`` times, and
reports each one's median training seconds and step time against today's defaults.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENT = "shakespeare_char_cpu"


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nanogpt import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *overrides])


def plain_loop(out: Path, overrides: list[str], phases: bool = False) -> None:
    """nanoGPT's train.py loop, reduced to what the recipe uses, over nanogpt's model and data.

    With ``phases`` it also prints the median time of each part of a training step, as
    :class:`PhaseTimer` does for nanogpt-train.
    """
    import torch
    from hydra.utils import instantiate

    from nanogpt.data import CorpusConfig, EvalWindows, TrainWindows, prepare_corpus
    from nanogpt.model import GPT, GPTConfig
    from nanogpt.schedule import fitted_warmup, warmup_cosine_factor
    from nanogpt.training.spec import model_fields  # imports no Lightning

    cfg = compose(overrides)
    d, m, o, s, t = cfg.data, cfg.model, cfg.optimizer, cfg.scheduler, cfg.trainer
    torch.manual_seed(cfg.seed)
    corpus = prepare_corpus(CorpusConfig.from_data(d))
    # the model nanogpt-train builds from the same config
    model = GPT(GPTConfig(**model_fields(m, vocab_size=corpus.vocab_size)))
    # the optimizer nanogpt-train builds: the optimizer group's factory over the model's parameter groups
    optimizer = instantiate(o)(model.param_groups())
    dtype = corpus.meta.dtype
    train_batches = iter(
        TrainWindows(corpus.path("train"), d.block_size, d.batch_size, cfg.seed, dtype=dtype)
    )
    val = EvalWindows(corpus.path("val"), d.block_size, d.batch_size, d.eval_batches, dtype=dtype)

    @torch.no_grad()
    def evaluate() -> float:
        model.eval()
        losses = [model(x, y)[1].item() for x, y in val]
        model.train()
        return sum(losses) / len(losses)

    # a run shorter than its warm-up warms up over a tenth of it, as nanogpt-train's does
    warmup = fitted_warmup(s.warmup_steps, s.decay_steps)
    out.mkdir(parents=True, exist_ok=True)
    best = float("inf")
    timings: dict[str, list[float]] = {name: [] for name in PHASES}
    clock = time.perf_counter
    for step in range(t.max_steps):
        start = clock()
        lr = o.lr * warmup_cosine_factor(step, warmup, s.decay_steps, s.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = next(train_batches)
        fetched = clock()
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        forward = clock()
        loss.backward()
        backward = clock()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.gradient_clip_val)
        optimizer.step()
        if phases:
            for name, seconds in zip(
                PHASES,
                (fetched - start, forward - fetched, backward - forward, clock() - backward),
                strict=True,
            ):
                timings[name].append(seconds)
        if (step + 1) % t.val_check_interval == 0 or step + 1 == t.max_steps:
            val_loss = evaluate()
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}
            if val_loss < best:
                best = val_loss
                torch.save(state, out / "best.pt")
            torch.save(state, out / "last.pt")
            print(f"step {step + 1}: val loss {val_loss:.4f}", flush=True)
    if phases:
        print_phases(timings)


# the parts of one training step, timed the same way in both loops
PHASES = ("batch and hooks", "forward", "backward", "clip and optimizer step")


def print_phases(timings: dict[str, list[float]]) -> None:
    # the first 50 steps warm up the allocator and the caches
    medians = {name: statistics.median(values[50:] or values) * 1e3 for name, values in timings.items()}
    print("PHASES " + json.dumps(medians), flush=True)


def run_timed(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (wall seconds, peak RSS in MiB) of that process alone."""
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed; see {log}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def full_val_loss(state_dict: dict, overrides: list[str]) -> float:
    """Mean cross-entropy over every token of the val split, in non-overlapping windows."""
    import torch

    from nanogpt.data import CorpusConfig, EvalWindows, prepare_corpus
    from nanogpt.model import GPT, GPTConfig
    from nanogpt.training.spec import model_fields

    cfg = compose(overrides)
    d = cfg.data
    # the runs prepared this text already, so this only finds and checks its folder
    corpus = prepare_corpus(CorpusConfig.from_data(d))
    model = GPT(GPTConfig(**model_fields(cfg.model, vocab_size=corpus.vocab_size)))
    model.load_state_dict(state_dict)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in EvalWindows(corpus.path("val"), cfg.data.block_size, 64, None, dtype=corpus.meta.dtype):
            _, loss = model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    return total / count


LIGHTNING, PLAIN, BASELINE = "nanogpt-train (Lightning)", "plain PyTorch loop", "nanogpt-train, baseline code"


def compare(
    repeats: int, overrides: list[str], keep: Path | None, baseline_src: Path | None, plain: bool
) -> None:
    import torch

    from nanogpt.runs.checkpoint import model_state_dict

    root = keep or Path(tempfile.mkdtemp(prefix="nanogpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    train_cmd = str(Path(sys.executable).with_name("nanogpt-train"))

    def lightning(run_dir: Path) -> list[str]:
        return [train_cmd, f"experiment={EXPERIMENT}", f"hydra.run.dir={run_dir}", *overrides]

    # name -> (command for a run folder, environment); run one after the other within each repeat
    runners: dict[str, tuple] = {LIGHTNING: (lightning, None)}
    if plain:
        runners[PLAIN] = (lambda d: [sys.executable, __file__, "plain", "--out", str(d), *overrides], None)
    if baseline_src is not None:
        # the same console script, importing nanogpt (and its configs) from another checkout
        env = {**os.environ, "PYTHONPATH": str(baseline_src.resolve() / "src")}
        runners[BASELINE] = (lightning, env)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    cfg = compose(overrides)
    steps, tokens_per_step = cfg.trainer.max_steps, cfg.data.batch_size * cfg.data.block_size
    for r in range(repeats):
        for i, (name, (command, env)) in enumerate(runners.items()):
            run_dir = root / f"{i}-{r}"
            results[name].append(run_timed(command(run_dir), root / f"{i}-{r}.log", env))
        walls = ", ".join(f"{name} {runs[-1][0]:.1f}s" for name, runs in results.items())
        print(f"repeat {r + 1}/{repeats}: {walls}", flush=True)

    val = {}
    for i, name in enumerate(runners):
        last = root / f"{i}-{repeats - 1}"
        if name == PLAIN:
            state = torch.load(last / "last.pt", map_location="cpu")["model"]
        else:
            state = model_state_dict(torch.load(last / "checkpoints" / "last.ckpt", map_location="cpu"))
        val[name] = full_val_loss(state, overrides)

    print(
        f"\n{EXPERIMENT}: {steps} steps x {tokens_per_step} tokens, {torch.get_num_threads()} threads, "
        f"median of {repeats} (min-max)"
    )
    header = (
        f"| {'run':<28} | {'val loss (whole split)':>22} | {'wall s':>20} | {'steps/s':>7} "
        f"| {'tokens/s':>8} | {'peak RSS MiB':>12} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    walls = {}
    for name, runs in results.items():
        times = [w for w, _ in runs]
        wall = walls[name] = statistics.median(times)
        spread = f"{wall:.1f} ({min(times):.1f}-{max(times):.1f})"
        print(
            f"| {name:<28} | {val[name]:>22.4f} | {spread:>20} | {steps / wall:>7.2f} | "
            f"{steps * tokens_per_step / wall:>8,.0f} | {max(r for _, r in runs):>12.0f} |"
        )
    ratios = {}
    for other in (PLAIN, BASELINE):
        if other in walls:
            per_repeat = [a[0] / b[0] for a, b in zip(results[LIGHTNING], results[other], strict=True)]
            ratios[other] = per_repeat
            print(
                f"\n{LIGHTNING} / {other}: median {statistics.median(per_repeat):.3f}x "
                f"(min {min(per_repeat):.3f}, max {max(per_repeat):.3f}) over {repeats} alternating repeats"
            )
    print(f"runs kept in {root}")
    (root / "benchmark.json").write_text(
        json.dumps({"results": results, "val": val, "ratios": ratios}, indent=1)
    )


PRECISIONS = ("32-true", "bf16-mixed")


def logged_median(rows: list[dict[str, str]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key)]
    return statistics.median(values) if values else None


def perf(
    experiment: str | None,
    steps: int,
    precisions: list[str],
    compiles: list[bool],
    peak: float | None,
    overrides: list[str],
    keep: Path | None,
) -> None:
    import csv

    import torch

    from nanogpt.metrics.flops import flops_per_token
    from nanogpt.model import GPTConfig

    cuda = torch.cuda.is_available()
    experiment = experiment or ("shakespeare_char" if cuda else EXPERIMENT)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    root = keep or Path(tempfile.mkdtemp(prefix="nanogpt-perf-"))
    root.mkdir(parents=True, exist_ok=True)
    train_cmd = str(Path(sys.executable).with_name("nanogpt-train"))
    rows = []
    for precision in precisions:
        for compiled in compiles:
            run_dir = root / f"{precision}-{'compiled' if compiled else 'eager'}"
            cmd = [train_cmd, f"experiment={experiment}", f"hydra.run.dir={run_dir}", *overrides]
            cmd += [f"trainer.precision={precision}", f"compile={compiled}", f"trainer.max_steps={steps}"]
            cmd += [f"trainer.val_check_interval={steps}", "data.eval_batches=1", "callbacks.bleu=null"]
            cmd += ["logger=csv", "trainer.log_every_n_steps=10", "callbacks.throughput.window=10"]
            cmd += ["scheduler.warmup_steps=0", "callbacks.last_checkpoint.every_n_train_steps=null"]
            if peak:
                cmd.append(f"callbacks.throughput.peak_flops={peak}")
            wall, _ = run_timed(cmd, run_dir.with_suffix(".log"))
            with open(run_dir / "csv" / "metrics.csv") as f:
                logged = [r for r in csv.DictReader(f) if r.get("perf/tokens_per_s")]
            later = logged[1:] or logged  # past the first window: compile and warm-up left out
            ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            flops = flops_per_token(GPTConfig(**ckpt["hyper_parameters"]["model"]))

            tokens, step_ms, mfu = (
                logged_median(later, f"perf/{k}") for k in ("tokens_per_s", "step_ms", "mfu")
            )
            rows.append((precision, compiled, tokens, step_ms, mfu, flops, wall))
            print(f"{precision} compile={compiled}: {tokens:,.0f} tokens/s, {wall:.0f} s", flush=True)

    print(f"\n{experiment} on {device}: {steps} steps each, median after the first 10-step window")
    print("| precision | compile | tokens/s | step ms | model TFLOP/s | MFU | wall s (with start-up) |")
    print("|---|---|---|---|---|---|---|")
    for precision, compiled, tokens, step_ms, mfu, flops, wall in rows:
        mfu_text = f"{mfu:.1%}" if mfu is not None else "n/a (no peak)"
        print(
            f"| {precision} | {'yes' if compiled else 'no'} | {tokens:,.0f} | {step_ms:.1f} | "
            f"{tokens * flops / 1e12:.3f} | {mfu_text} | {wall:.0f} |"
        )
    print(f"runs kept in {root}")


def settings(steps: int, repeats: int, overrides: list[str], keep: Path | None) -> None:
    import csv

    cores = os.cpu_count() or 1
    # name -> (extra overrides, extra environment); the first row is today's defaults
    candidates: dict[str, tuple[list[str], dict[str, str]]] = {
        f"defaults (torch's {cores} threads, no worker)": ([], {}),
        "1 torch thread": ([], {"OMP_NUM_THREADS": "1"}),
        "1 DataLoader worker": (["data.num_workers=1"], {}),
        "1 worker, 1 torch thread": (["data.num_workers=1"], {"OMP_NUM_THREADS": "1"}),
        "pinned memory": (["data.pin_memory=true"], {}),
    }
    root = keep or Path(tempfile.mkdtemp(prefix="nanogpt-settings-"))
    root.mkdir(parents=True, exist_ok=True)
    train_cmd = str(Path(sys.executable).with_name("nanogpt-train"))
    measured: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for r in range(repeats):
        for i, (name, (extra, env)) in enumerate(candidates.items()):
            run_dir = root / f"{i}-{r}"
            cmd = [train_cmd, f"experiment={EXPERIMENT}", f"hydra.run.dir={run_dir}", *overrides, *extra]
            cmd += [f"trainer.max_steps={steps}", "callbacks.bleu=null", "logger=csv"]
            run_timed(cmd, run_dir.with_suffix(".log"), {**os.environ, **env})
            with open(run_dir / "csv" / "metrics.csv") as f:
                rows = list(csv.DictReader(f))
            train_s = max(float(row["perf/train_s"]) for row in rows if row.get("perf/train_s"))
            step_ms = logged_median([row for row in rows if row.get("perf/step_ms")][1:], "perf/step_ms")
            measured[name].append((train_s, step_ms))
            print(f"repeat {r + 1}/{repeats} {name}: {train_s:.1f} s training", flush=True)

    first = next(iter(measured))
    print(f"\n{EXPERIMENT} on {cores} CPU cores: {steps} steps, validation included, median of {repeats}")
    print("| setting | training s (min-max) | step ms | against the defaults |")
    print("|---|---|---|---|")
    for name, runs in measured.items():
        seconds = [s for s, _ in runs]
        ratios = [s / base for (s, _), (base, _) in zip(runs, measured[first], strict=True)]
        print(
            f"| {name} | {statistics.median(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f}) | "
            f"{statistics.median(ms for _, ms in runs):.1f} | {statistics.median(ratios):.3f}x |"
        )
    print(f"runs kept in {root}")


# what the plain loop imports, against what nanogpt-train imports
PLAIN_IMPORTS = (
    "import torch, hydra, hydra.utils, nanogpt.data, nanogpt.data.windows, nanogpt.model, nanogpt.schedule"
)
# the largest parts of nanogpt-train's start-up, and who imports them
IMPORTED_BY = {
    "torch._dynamo": "lightning.fabric.wrappers",
    "torchmetrics": "lightning.fabric (its version check)",
    "scipy.signal": "torchmetrics, whenever SciPy is installed",
    "transformers": "torchmetrics' BERTScore, whenever transformers is installed ([hf] extra)",
}


def import_seconds(statement: str, repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def import_breakdown(statement: str) -> dict[str, float]:
    """Seconds each module of IMPORTED_BY adds (python -X importtime's cumulative column)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True
    )
    seconds = {}
    for line in done.stderr.splitlines():
        fields = line.split("|")
        if len(fields) == 3 and fields[2].strip() in IMPORTED_BY:
            seconds.setdefault(fields[2].strip(), int(fields[1]) / 1e6)
    return seconds


def profile(steps: int, repeats: int, overrides: list[str], keep: Path | None) -> None:
    root = keep or Path(tempfile.mkdtemp(prefix="nanogpt-profile-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"start-up: whole processes, median of {repeats}")
    print("| process | seconds |")
    print("|---|---|")
    for label, statement in (
        ("python alone", "pass"),
        ("`import torch`", "import torch"),
        ("the plain loop's imports (torch, Hydra, nanogpt's data and model)", PLAIN_IMPORTS),
        ("`import nanogpt.training.job` (Lightning, torchmetrics)", "import nanogpt.training.job"),
    ):
        print(f"| {label} | {import_seconds(statement, repeats):.2f} |", flush=True)
    print("\nof which, in `import nanogpt.training.job` (python -X importtime, cumulative):")
    print("| module | seconds | imported by |")
    print("|---|---|---|")
    for module, seconds in import_breakdown("import nanogpt.training.job").items():
        print(f"| {module} | {seconds:.2f} | {IMPORTED_BY[module]} |")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    train_cmd = str(Path(sys.executable).with_name("nanogpt-train"))
    medians: dict[str, list[dict[str, float]]] = {PLAIN: [], LIGHTNING: []}
    for r in range(repeats):
        for name in medians:
            run_dir = root / f"{name.split()[0]}-{r}"
            if name == PLAIN:
                cmd = [sys.executable, __file__, "plain", "--phases", "--out", str(run_dir)]
            else:
                cmd = [
                    train_cmd,
                    f"experiment={EXPERIMENT}",
                    f"hydra.run.dir={run_dir}",
                    "callbacks.bleu=null",
                ]
                cmd.append("+callbacks.phase_timer._target_=phase_timer.PhaseTimer")
            cmd += [*overrides, f"trainer.max_steps={steps}"]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
            line = next(x for x in out.stdout.splitlines() if x.startswith("PHASES "))
            medians[name].append(json.loads(line.removeprefix("PHASES ")))
    print(
        f"\none training step of {EXPERIMENT}, ms: the median over steps 50-{steps}, then over {repeats} runs"
    )
    print(f"| part of the step | {PLAIN} | {LIGHTNING} | difference |")
    print("|---|---|---|---|")
    totals = dict.fromkeys(medians, 0.0)
    for phase in PHASES:
        ms = {name: statistics.median(run[phase] for run in runs) for name, runs in medians.items()}
        for name in ms:
            totals[name] += ms[name]
        print(f"| {phase} | {ms[PLAIN]:.2f} | {ms[LIGHTNING]:.2f} | {ms[LIGHTNING] - ms[PLAIN]:+.2f} |")
    plain, ours = totals[PLAIN], totals[LIGHTNING]
    print(f"| **step** | {plain:.2f} | {ours:.2f} | {ours - plain:+.2f} |")
    print(f"runs kept in {root}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "mode", nargs="?", choices=["compare", "plain", "perf", "settings", "profile"], default="compare"
    )
    parser.add_argument(
        "--experiment", help="perf: the recipe (default: shakespeare_char on CUDA, else the CPU one)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="perf, settings: optimizer steps per run (100, 500)"
    )
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="perf: trainer.precision values")
    parser.add_argument(
        "--compile", default="false,true", help="perf: compile values, e.g. false or false,true"
    )
    parser.add_argument("--peak-flops", type=float, help="perf: peak FLOP/s of one device, for MFU")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a new temporary folder)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another checkout of nanogpt (e.g. a git worktree of main); adds its nanogpt-train as a row",
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loop")
    parser.add_argument(
        "--phases", action="store_true", help="plain: print the median time of each part of a step"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = parser.parse_intermixed_args()
    if args.mode == "plain":
        plain_loop(args.out, args.overrides, phases=args.phases)
    elif args.mode == "profile":
        profile(args.steps or 500, args.repeats, args.overrides, args.out)
    elif args.mode == "settings":
        settings(args.steps or 500, args.repeats, args.overrides, args.out)
    elif args.mode == "perf":
        compiles = [c.strip().lower() == "true" for c in args.compile.split(",")]
        perf(
            args.experiment,
            args.steps or 100,
            args.precisions.split(","),
            compiles,
            args.peak_flops,
            args.overrides,
            args.out,
        )
    else:
        compare(args.repeats, args.overrides, args.out, args.baseline_src, plain=not args.no_plain)


if __name__ == "__main__":
    main()
