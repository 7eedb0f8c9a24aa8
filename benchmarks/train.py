"""nanogpt-train on this machine: against a plain PyTorch loop, its speed, its defaults, where a step goes.

``compare`` (the default) runs the shakespeare_char_cpu recipe as nanogpt-train and as a plain
PyTorch loop; ``perf`` measures tokens/s, step time and MFU for precision x compile.

Both runs train the same model on the same batches with the same optimizer, schedule, clipping,
evaluation and best-checkpoint saving; the only difference is Lightning and Hydra around the loop.
Each is timed as a whole command, start-up included, in its own process, and its peak RSS is read
from the kernel. The final model of each is then scored on the *whole* val split.

    python -m benchmarks train                      # both, then the table
    python -m benchmarks train --repeats 3          # alternate the two, report the median
    git worktree add /tmp/before main && python -m benchmarks train --repeats 3 --no-plain \\
        --baseline-src /tmp/before                  # this code against another checkout's
    python -m benchmarks train plain --out DIR      # only the plain loop (used by the above)
    python -m benchmarks train perf                 # precision x compile on this device's recipe
    python -m benchmarks train perf --experiment shakespeare model=gpt2 data.batch_size=16
                                                    # GPT-2 124M at context 1024
    python -m benchmarks train perf --peak-flops 1.5e11   # MFU against a peak you give (CPUs)
    python -m benchmarks train settings --repeats 3 # torch threads, DataLoader workers, pinned memory
    python -m benchmarks train profile --repeats 3  # where the time goes: start-up, and each part of a step

``perf`` trains each combination for ``--steps`` optimizer steps in its own nanogpt-train process
and reports the median of the ``perf/*`` values its loggers got after the first window (so compile
time and warm-up are left out), with the FLOPs the model needs per second.

``profile`` times the start-up of both (whole processes, and ``python -X importtime`` for the
largest imports), then each part of a training step in both loops, alternating ``--repeats`` times:
nanogpt-train's with the :class:`benchmarks.probes.PhaseTimer` callback on its command line.

``settings`` trains the CPU recipe for ``--steps`` steps under each candidate default (torch's
intra-op threads, a DataLoader worker, pinned memory), alternating them ``--repeats`` times, and
reports each one's median training seconds and step time against today's defaults.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt when offline.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks import logged
from benchmarks.process import Run, console_script, output_folder, run
from benchmarks.startup import import_costs
from benchmarks.stats import Spread, alternate, ratios
from benchmarks.suites import parser
from benchmarks.table import markdown

# the plain loop runs this module and so must never import Lightning: the probes live elsewhere

EXPERIMENT = "shakespeare_char_cpu"


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from nanogpt import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[f"experiment={EXPERIMENT}", *overrides])


def model_config(model, vocab_size: int):
    """The model nanogpt-train builds from ``cfg.model`` and the data's vocabulary, as
    ``nanogpt.training.spec.model_fields`` spells it for a run that starts from scratch (that module
    imports Lightning, which the plain loop must not)."""
    from omegaconf import OmegaConf

    from nanogpt.model import GPTConfig

    fields = OmegaConf.to_container(model, resolve=True)
    fields.pop("init_from", None)  # where weights start from, not the architecture; None here
    return GPTConfig(**{**fields, "vocab_size": fields.get("vocab_size") or vocab_size})


def plain_loop(out: Path, overrides: list[str], phases: bool = False) -> None:
    """nanoGPT's train.py loop, reduced to what the recipe uses, over nanogpt's model and data.

    With ``phases`` it also prints the median time of each part of a training step, as
    :class:`benchmarks.probes.PhaseTimer` does for nanogpt-train.
    """
    import torch
    from hydra.utils import instantiate

    from nanogpt.data import CorpusConfig, EvalWindows, TrainWindows, prepare_corpus
    from nanogpt.model import GPT
    from nanogpt.schedule import fitted_warmup, warmup_cosine_factor

    cfg = compose(overrides)
    d, m, o, s, t = cfg.data, cfg.model, cfg.optimizer, cfg.scheduler, cfg.trainer
    torch.manual_seed(cfg.seed)
    corpus = prepare_corpus(CorpusConfig.from_data(d))
    model = GPT(model_config(m, corpus.vocab_size))
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
PHASES_TAG = "PHASES "


def print_phases(timings: dict[str, list[float]]) -> None:
    # the first 50 steps warm up the allocator and the caches
    medians = {name: statistics.median(values[50:] or values) * 1e3 for name, values in timings.items()}
    print(PHASES_TAG + json.dumps(medians), flush=True)


def full_val_loss(state_dict: dict, overrides: list[str]) -> float:
    """Mean cross-entropy over every token of the val split, in non-overlapping windows."""
    import torch

    from nanogpt.data import CorpusConfig, EvalWindows, prepare_corpus
    from nanogpt.model import GPT

    cfg = compose(overrides)
    d = cfg.data
    # the runs prepared this text already, so this only finds and checks its folder
    corpus = prepare_corpus(CorpusConfig.from_data(d))
    model = GPT(model_config(cfg.model, corpus.vocab_size))
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


def plain_command(out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "train", "plain", *flags, "--out", str(out)]


def train_command(run_dir: Path, *overrides: str, experiment: str = EXPERIMENT) -> list[str]:
    return [
        console_script("nanogpt-train"),
        f"experiment={experiment}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def compare(
    repeats: int, overrides: list[str], keep: Path | None, baseline_src: Path | None, plain: bool
) -> None:
    import torch

    from nanogpt.runs.checkpoint import model_state_dict
    from nanogpt.runs.folder import RunDir

    root = output_folder(keep, "nanogpt-bench-")
    # name -> (command for a run folder, environment); run one after the other within each repeat
    runners: dict[str, tuple] = {LIGHTNING: (lambda d: train_command(d, *overrides), None)}
    if plain:
        runners[PLAIN] = (lambda d: plain_command(d, *overrides), None)
    if baseline_src is not None:
        # the same console script, importing nanogpt (and its configs) from another checkout
        env = {**os.environ, "PYTHONPATH": str(baseline_src.resolve() / "src")}
        runners[BASELINE] = (runners[LIGHTNING][0], env)
    names = list(runners)

    def measure(name: str, r: int) -> Run:
        command, env = runners[name]
        i = names.index(name)
        return run(command(root / f"{i}-{r}"), root / f"{i}-{r}.log", env=env).check()

    results = alternate(names, repeats, measure, show=lambda done: f"{done.wall:.1f}s")
    cfg = compose(overrides)
    steps, tokens_per_step = cfg.trainer.max_steps, cfg.data.batch_size * cfg.data.block_size

    val = {}
    for i, name in enumerate(names):
        last = root / f"{i}-{repeats - 1}"
        if name == PLAIN:
            state = torch.load(last / "last.pt", map_location="cpu")["model"]
        else:
            state = model_state_dict(torch.load(RunDir.at(last).last, map_location="cpu"))
        val[name] = full_val_loss(state, overrides)

    print(
        f"\n{EXPERIMENT}: {steps} steps x {tokens_per_step} tokens, {torch.get_num_threads()} threads, "
        f"median of {repeats} (min-max)"
    )
    walls = {name: Spread.of(done.wall for done in runs) for name, runs in results.items()}
    columns = ["run", "val loss (whole split)", "wall s", "steps/s", "tokens/s", "peak RSS MiB"]
    rows = [
        (
            name,
            f"{val[name]:.4f}",
            wall.text(1),
            f"{steps / wall.median:.2f}",
            f"{steps * tokens_per_step / wall.median:,.0f}",
            f"{max(done.peak_rss_mib for done in results[name]):.0f}",
        )
        for name, wall in walls.items()
    ]
    print(markdown(columns, rows))
    per_repeat = {}
    for other in (PLAIN, BASELINE):
        if other in results:
            per_repeat[other] = ratios((d.wall for d in results[LIGHTNING]), (d.wall for d in results[other]))
            spread = Spread.of(per_repeat[other])
            print(
                f"\n{LIGHTNING} / {other}: median {spread.median:.3f}x "
                f"(min {spread.low:.3f}, max {spread.high:.3f}) over {repeats} alternating repeats"
            )
    print(f"runs kept in {root}")
    measured = {name: [(d.wall, d.peak_rss_mib) for d in runs] for name, runs in results.items()}
    (root / "benchmark.json").write_text(
        json.dumps({"results": measured, "val": val, "ratios": per_repeat}, indent=1)
    )


PRECISIONS = ("32-true", "bf16-mixed")


def perf(
    experiment: str | None,
    steps: int,
    precisions: list[str],
    compiles: list[bool],
    peak: float | None,
    overrides: list[str],
    keep: Path | None,
) -> None:
    import torch

    from nanogpt.metrics.flops import flops_per_token
    from nanogpt.model import GPTConfig
    from nanogpt.runs.folder import RunDir

    cuda = torch.cuda.is_available()
    experiment = experiment or ("shakespeare_char" if cuda else EXPERIMENT)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    root = output_folder(keep, "nanogpt-perf-")
    rows = []
    for precision in precisions:
        for compiled in compiles:
            run_dir = root / f"{precision}-{'compiled' if compiled else 'eager'}"
            cmd = train_command(run_dir, *overrides, experiment=experiment)
            cmd += [f"trainer.precision={precision}", f"compile={compiled}", f"trainer.max_steps={steps}"]
            cmd += [f"trainer.val_check_interval={steps}", "data.eval_batches=1", "callbacks.bleu=null"]
            cmd += ["logger=csv", "trainer.log_every_n_steps=10", "callbacks.throughput.window=10"]
            cmd += ["scheduler.warmup_steps=0", "callbacks.last_checkpoint.every_n_train_steps=null"]
            if peak:
                cmd.append(f"callbacks.throughput.peak_flops={peak}")
            wall = run(cmd, run_dir.with_suffix(".log")).check().wall
            metrics = logged.metrics(run_dir)
            ckpt = torch.load(RunDir.at(run_dir).last, map_location="cpu", weights_only=True)
            flops = flops_per_token(GPTConfig(**ckpt["hyper_parameters"]["model"]))
            tokens, step_ms, mfu = (
                logged.median_after_first_window(metrics, f"perf/{k}")
                for k in ("tokens_per_s", "step_ms", "mfu")
            )
            mfu_text = f"{mfu:.1%}" if mfu is not None else "n/a (no peak)"
            rows.append(
                (
                    precision,
                    "yes" if compiled else "no",
                    f"{tokens:,.0f}",
                    f"{step_ms:.1f}",
                    f"{tokens * flops / 1e12:.3f}",
                    mfu_text,
                    f"{wall:.0f}",
                )
            )
            print(f"{precision} compile={compiled}: {tokens:,.0f} tokens/s, {wall:.0f} s", file=sys.stderr)

    print(f"\n{experiment} on {device}: {steps} steps each, median after the first 10-step window")
    columns = [
        "precision",
        "compile",
        "tokens/s",
        "step ms",
        "model TFLOP/s",
        "MFU",
        "wall s (with start-up)",
    ]
    print(markdown(columns, rows))
    print(f"runs kept in {root}")


def settings(steps: int, repeats: int, overrides: list[str], keep: Path | None) -> None:
    cores = os.cpu_count() or 1
    # name -> (extra overrides, extra environment); the first row is today's defaults
    candidates: dict[str, tuple[list[str], dict[str, str]]] = {
        f"defaults (torch's {cores} threads, no worker)": ([], {}),
        "1 torch thread": ([], {"OMP_NUM_THREADS": "1"}),
        "1 DataLoader worker": (["data.num_workers=1"], {}),
        "1 worker, 1 torch thread": (["data.num_workers=1"], {"OMP_NUM_THREADS": "1"}),
        "pinned memory": (["data.pin_memory=true"], {}),
    }
    root = output_folder(keep, "nanogpt-settings-")
    names = list(candidates)

    def measure(name: str, r: int) -> tuple[float, float]:
        extra, env = candidates[name]
        run_dir = root / f"{names.index(name)}-{r}"
        cmd = train_command(run_dir, *overrides, *extra)
        cmd += [f"trainer.max_steps={steps}", "callbacks.bleu=null", "logger=csv"]
        run(cmd, run_dir.with_suffix(".log"), env={**os.environ, **env}).check()
        metrics = logged.metrics(run_dir)
        train_s = max(logged.values(metrics, "perf/train_s"))
        return train_s, logged.median_after_first_window(metrics, "perf/step_ms")

    measured = alternate(names, repeats, measure, show=lambda m: f"{m[0]:.1f} s training")
    defaults = [s for s, _ in measured[names[0]]]
    print(f"\n{EXPERIMENT} on {cores} CPU cores: {steps} steps, validation included, median of {repeats}")
    rows = [
        (
            name,
            Spread.of(s for s, _ in runs).text(1),
            f"{statistics.median(ms for _, ms in runs):.1f}",
            f"{statistics.median(ratios((s for s, _ in runs), defaults)):.3f}x",
        )
        for name, runs in measured.items()
    ]
    print(markdown(["setting", "training s (min-max)", "step ms", "against the defaults"], rows))
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
STARTUPS = {
    "python alone": "pass",
    "`import torch`": "import torch",
    "the plain loop's imports (torch, Hydra, nanogpt's data and model)": PLAIN_IMPORTS,
    "`import nanogpt.training.job` (Lightning, torchmetrics)": "import nanogpt.training.job",
}


def profile(steps: int, repeats: int, overrides: list[str], keep: Path | None) -> None:
    root = output_folder(keep, "nanogpt-profile-")

    def started(name: str, r: int) -> float:
        return run([sys.executable, "-c", STARTUPS[name]]).check().wall

    startups = alternate(list(STARTUPS), repeats, started)
    print(f"start-up: whole processes, median of {repeats}")
    print(markdown(["process", "seconds"], [(k, f"{statistics.median(v):.2f}") for k, v in startups.items()]))
    print("\nof which, in `import nanogpt.training.job` (python -X importtime, cumulative):")
    costs = import_costs("nanogpt.training.job", IMPORTED_BY)
    print(
        markdown(
            ["module", "seconds", "imported by"], [(m, f"{s:.2f}", IMPORTED_BY[m]) for m, s in costs.items()]
        )
    )

    def phases(name: str, r: int) -> dict[str, float]:
        run_dir = root / f"{name.split()[0]}-{r}"
        if name == PLAIN:
            cmd = plain_command(run_dir, "--phases")
        else:
            cmd = train_command(run_dir, "callbacks.bleu=null")
            cmd.append("+callbacks.phase_timer._target_=benchmarks.probes.PhaseTimer")
        done = run([*cmd, *overrides, f"trainer.max_steps={steps}"], run_dir.with_suffix(".log")).check()
        line = next(line for _, line in done.lines if line.startswith(PHASES_TAG))
        return json.loads(line.removeprefix(PHASES_TAG))

    medians = alternate([PLAIN, LIGHTNING], repeats, phases)
    print(
        f"\none training step of {EXPERIMENT}, ms: the median over steps 50-{steps}, then over {repeats} runs"
    )
    totals = dict.fromkeys(medians, 0.0)
    rows = []
    for phase in PHASES:
        ms = {name: statistics.median(run[phase] for run in runs) for name, runs in medians.items()}
        for name in ms:
            totals[name] += ms[name]
        rows.append((phase, f"{ms[PLAIN]:.2f}", f"{ms[LIGHTNING]:.2f}", f"{ms[LIGHTNING] - ms[PLAIN]:+.2f}"))
    plain, ours = totals[PLAIN], totals[LIGHTNING]
    rows.append(("**step**", f"{plain:.2f}", f"{ours:.2f}", f"{ours - plain:+.2f}"))
    print(markdown(["part of the step", PLAIN, LIGHTNING, "difference"], rows))
    print(f"runs kept in {root}")


def main(argv: list[str] | None = None) -> None:
    cli = parser("train", __doc__)
    cli.add_argument(
        "mode", nargs="?", choices=["compare", "plain", "perf", "settings", "profile"], default="compare"
    )
    cli.add_argument(
        "--experiment", help="perf: the recipe (default: shakespeare_char on CUDA, else the CPU one)"
    )
    cli.add_argument(
        "--steps",
        type=int,
        default=None,
        help="perf, settings, profile: optimizer steps per run (100, 500, 500)",
    )
    cli.add_argument("--precisions", default=",".join(PRECISIONS), help="perf: trainer.precision values")
    cli.add_argument("--compile", default="false,true", help="perf: compile values, e.g. false or false,true")
    cli.add_argument("--peak-flops", type=float, help="perf: peak FLOP/s of one device, for MFU")
    cli.add_argument("--repeats", type=int, default=1)
    cli.add_argument("--out", type=Path, help="folder for the runs (default: a new temporary folder)")
    cli.add_argument(
        "--baseline-src",
        type=Path,
        help="another checkout of nanogpt (e.g. a git worktree of main); adds its nanogpt-train as a row",
    )
    cli.add_argument("--no-plain", action="store_true", help="skip the plain PyTorch loop")
    cli.add_argument(
        "--phases", action="store_true", help="plain: print the median time of each part of a step"
    )
    cli.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    args = cli.parse_intermixed_args(argv)
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
