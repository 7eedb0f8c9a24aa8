"""``data=text`` on large corpora: preparing, training's memory while streaming, nanoGPT's BPE prepare.py.

    python -m benchmarks data                          # 0.5 and 2 GB, GPT-2 BPE, 2 processes
    python -m benchmarks data --gb 0.05 --steps 200    # a quick look
    python -m benchmarks data --nanogpt /path/to/nanoGPT   # adds the nanoGPT comparison

1. A corpus of ``--gb`` GB is written as a folder of 64 MiB text files: Tiny Shakespeare's lines in a
   seeded random order, with a line of non-ASCII text now and then. ``prepare_corpus`` runs on it in
   a fresh process with ``num_proc`` tokenizing processes; the peak RSS is that of the whole process
   tree (the main process plus its workers), sampled every 50 ms from /proc, and of the main process
   alone.
2. ``nanogpt-train`` (a tiny model) streams batches from the largest prepared corpus; its RSS is read
   at step 10 and at the last step, by the :class:`benchmarks.probes.RssAtSteps` callback on its
   command line.
3. Tiny Shakespeare to GPT-2 BPE tokens: nanoGPT's own script (given ``--nanogpt``), ``data=shakespeare_gpt2``
   (``data.path``) and ``data=text`` (``data.source``), each in a fresh process: the same tokens.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt and, offline, TIKTOKEN_CACHE_DIR. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import nanogpt_ref, text
from benchmarks.corpus import printed
from benchmarks.process import console_script, run
from benchmarks.suites import parser
from benchmarks.table import markdown

RSS = "RSS "  # what benchmarks.probes.RssAtSteps prints: "RSS <step> <VmRSS MiB> <RssAnon MiB>"


def prepare(
    data_dir: Path, tokenizer: str, num_proc: int | None, env: dict[str, str], **where: Path
) -> list[str]:
    """The command that prepares a corpus in a fresh process (``where``: ``path=`` or ``source=``)."""
    command = [sys.executable, "-m", "benchmarks.corpus", "prepare", str(data_dir), tokenizer]
    command += [f"--{key}={value}" for key, value in where.items()]
    return command + ([f"--num-proc={num_proc}"] if num_proc else [])


def main(argv: list[str] | None = None) -> None:
    cli = parser("data", __doc__)
    cli.add_argument("--gb", type=float, nargs="+", default=[0.5, 2.0], help="corpus sizes")
    cli.add_argument("--tokenizer", default="gpt2")
    cli.add_argument("--num-proc", type=int, default=2)
    cli.add_argument("--steps", type=int, default=1000, help="training steps for the RSS check (0: none)")
    cli.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT, for its prepare.py")
    cli.add_argument("--workdir", type=Path, help="where to write the corpora (default: a temp folder)")
    args = cli.parse_args(argv)
    shakespeare = text.shakespeare()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="nanogpt-bench-data-", dir=args.workdir))
    try:
        rows = []
        for gb in args.gb:
            corpus = work / f"corpus-{gb}"
            size = text.shuffled_lines(corpus, gb, shakespeare)
            command = prepare(work / "data", args.tokenizer, args.num_proc, env, source=corpus)
            done = run(command, env=env, sample_memory=True).check()
            result, peaks = printed(done.output), done.peak_tree
            tokens, seconds = result["train_tokens"] + result["val_tokens"], result["seconds"]
            rows.append(
                (
                    f"{size / 2**30:.2f} GiB",
                    f"{tokens:,}",
                    f"{seconds:.0f}",
                    f"{tokens / seconds:,.0f}",
                    f"{size / 2**20 / seconds:.1f}",
                    f"{peaks['pss']:.0f} MiB",
                    f"{peaks['pss_anon']:.0f} MiB",
                    f"{peaks['rss_main']:.0f} MiB",
                )
            )
            if gb != max(args.gb):  # the largest one feeds the training check
                shutil.rmtree(corpus)
        print(f"\nprepare_corpus, tokenizer {args.tokenizer}, num_proc={args.num_proc}; peaks over the run")
        columns = [
            "corpus",
            "tokens",
            "seconds",
            "tokens/s",
            "MiB/s",
            "PSS, all processes",
            "of it anonymous",
        ]
        print(markdown([*columns, "RSS, main"], rows))

        largest = work / f"corpus-{max(args.gb)}"
        if args.steps:
            train_check(args, largest, work, env)
        shakespeare_check(args, shakespeare, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_check(args: argparse.Namespace, largest: Path, work: Path, env: dict[str, str]) -> None:
    command = [
        console_script("nanogpt-train"),
        "data=text",
        f"data.source={largest}",
        f"data.data_dir={work / 'data'}",
        f"data.tokenizer={args.tokenizer}",
        "model=gpt_tiny",
        "model.block_size=64",
        "trainer=cpu",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.steps}",
        "data.batch_size=8",
        "data.eval_batches=2",
        "scheduler.warmup_steps=5",
        "callbacks.bleu=null",
        "~logger",
        f"paths.log_dir={work / 'runs'}",
        "+callbacks.rss._target_=benchmarks.probes.RssAtSteps",
    ]
    done = run(command, env=env).check()
    pattern = re.escape(RSS) + r"(\d+) ([\d.]+) ([\d.]+)"
    rss = {int(s): (float(r), float(a)) for s, r, a in re.findall(pattern, done.output)}
    print(f"\nnanogpt-train streaming from the {max(args.gb)} GB corpus (gpt_tiny, block 64, batch 8)")
    (r0, a0), (r1, a1) = rss[10], rss[args.steps]
    rows = [
        ("10", f"{r0:.0f} MiB", f"{a0:.0f} MiB"),
        (
            str(args.steps),
            f"{r1:.0f} MiB ({(r1 / r0 - 1) * 100:+.1f}%)",
            f"{a1:.0f} MiB ({(a1 / a0 - 1) * 100:+.1f}%)",
        ),
    ]
    print(markdown(["step", "RSS", "of it anonymous"], rows))


def shakespeare_check(args: argparse.Namespace, shakespeare: Path, work: Path, env: dict[str, str]) -> None:
    print("\nTiny Shakespeare -> GPT-2 BPE, each in a fresh process")
    rows = []
    if args.nanogpt is not None:
        folder = work / "nanoGPT"
        log = work / "nanogpt-prepare.log"
        done = nanogpt_ref.prepare(args.nanogpt, folder, "shakespeare", shakespeare, log).check()
        sizes = [(folder / "data" / "shakespeare" / f"{s}.bin").stat().st_size // 2 for s in ("train", "val")]
        rows.append(
            ("nanoGPT data/shakespeare/prepare.py", f"{done.wall:.1f}", "", f"{sizes[0]:,}", f"{sizes[1]:,}")
        )
    for name, where in [("nanogpt data=shakespeare_gpt2", "path"), ("nanogpt data=text", "source")]:
        command = prepare(work / f"shakespeare-{where}", "gpt2", None, env, **{where: shakespeare})
        done = run(command, env=env).check()
        inside = printed(done.output)
        rows.append(
            (
                name,
                f"{done.wall:.1f}",
                f"{inside['seconds']:.1f}",
                f"{inside['train_tokens']:,}",
                f"{inside['val_tokens']:,}",
            )
        )
    print(markdown(["preparation", "process seconds", "of it preparing", "train tokens", "val tokens"], rows))
