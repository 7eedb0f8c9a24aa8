"""Benchmark ``data=text`` preparation on large synthetic corpora, training's memory while streaming
from one, and the BPE Shakespeare preparation against nanoGPT's ``data/shakespeare/prepare.py``.

    python scripts/benchmark_data.py                          # 0.5 and 2 GB, GPT-2 BPE, 2 processes
    python scripts/benchmark_data.py --gb 0.05 --steps 200    # a quick look
    python scripts/benchmark_data.py --nanogpt /path/to/nanoGPT   # adds the nanoGPT comparison

1. A corpus of ``--gb`` GB is written as a folder of 64 MiB text files: Tiny Shakespeare's lines in a
   seeded random order, with a line of non-ASCII text now and then. ``prepare_corpus`` runs on it in
   a fresh process with ``num_proc`` tokenizing processes; the peak RSS is that of the whole process
   tree (the main process plus its workers), sampled every 50 ms from /proc, and of the main process
   alone.
2. ``nanogpt-train`` (a tiny model) streams batches from the largest prepared corpus; its RSS is read
   at step 10 and at the last step.
3. Tiny Shakespeare to GPT-2 BPE tokens: nanoGPT's own script (given ``--nanogpt``), ``data=shakespeare_gpt2``
   (``data.path``) and ``data=text`` (``data.source``), each in a fresh process: the same tokens.

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt and, offline, TIKTOKEN_CACHE_DIR. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILE_BYTES = 64 << 20
EXTRA = "Café — naïve “quoted” 日本語 ½"

# the corpus options of configs/data/text.yaml, but for those each run sets
OPTIONS = (
    'url=None, md5=None, text_column="text", split="train", errors="strict", val_fraction=0.1, '
    "follow_symlinks=False"
)

PREPARE = f"""
import json, sys, time
from nanogpt.data import CorpusConfig, prepare_corpus
data_dir, source, tokenizer, num_proc = sys.argv[1:]
config = CorpusConfig(
    data_dir=data_dir, path=None, source=source, tokenizer=tokenizer, num_proc=int(num_proc), {OPTIONS}
)
start = time.perf_counter()
corpus = prepare_corpus(config)
tokens = corpus.meta.train_tokens + corpus.meta.val_tokens
print(json.dumps({{"seconds": time.perf_counter() - start, "tokens": tokens}}))
"""

# a callback that prints the process's RSS at step 10 and at the last step
TRAIN = """
import sys
import lightning as L
from nanogpt.cli.train import main

def rss_mib():
    lines = [l for l in open("/proc/self/status") if l.startswith(("VmRSS", "RssAnon"))]
    kib = {l.split(":")[0]: l.split()[1] for l in lines}
    return f"{int(kib['VmRSS']) / 1024:.1f} {int(kib['RssAnon']) / 1024:.1f}"

class Rss(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step in (10, trainer.max_steps):
            print(f"\\nRSS {trainer.global_step} {rss_mib()}", flush=True)

import nanogpt.training.job as t
build = t.instantiate
def with_rss(node, **kw):
    obj = build(node, **kw)
    if isinstance(obj, L.Trainer):
        obj.callbacks.append(Rss())
    return obj
t.instantiate = with_rss
sys.argv = ["nanogpt-train", *sys.argv[1:]]
main()
"""


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


def run_sampled(args: list[str], env: dict[str, str]) -> tuple[str, dict[str, float]]:
    """Run a child process; return its stdout and the peaks of :func:`memory_mib` over its run."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True)
    peaks: dict[str, float] = {}
    while proc.poll() is None:
        for key, value in memory_mib(proc.pid).items():
            peaks[key] = max(peaks.get(key, 0.0), value)
        time.sleep(0.05)
    out = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"{args[:3]} failed with exit code {proc.returncode}")
    return out, peaks


def write_corpus(folder: Path, gb: float, shakespeare: Path) -> int:
    """Write about ``gb`` GB of text as 64 MiB files into ``folder``; return the bytes written."""
    lines = shakespeare.read_text().splitlines()
    rng = random.Random(0)
    folder.mkdir(parents=True)
    target, written, part = int(gb * 2**30), 0, 0
    while written < target:
        with (folder / f"part-{part:05d}.txt").open("w") as f:
            size = 0
            while size < FILE_BYTES and written + size < target:
                block = "\n".join(rng.choice(lines) if rng.random() > 0.01 else EXTRA for _ in range(10_000))
                size += f.write(block + "\n")  # characters, close to bytes for this text
        written += (folder / f"part-{part:05d}.txt").stat().st_size
        part += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gb", type=float, nargs="+", default=[0.5, 2.0], help="corpus sizes")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000, help="training steps for the RSS check (0: none)")
    parser.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT, for its prepare.py")
    parser.add_argument("--workdir", type=Path, help="where to write the corpora (default: a temp folder)")
    args = parser.parse_args()
    shakespeare = Path(os.environ.get("NANOGPT_SHAKESPEARE_PATH", "data/shakespeare_char/input.txt"))
    if not shakespeare.is_file():
        sys.exit(f"no text at {shakespeare}; set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="nanogpt-bench-data-", dir=args.workdir))
    try:
        rows = []
        for gb in args.gb:
            corpus = work / f"corpus-{gb}"
            size = write_corpus(corpus, gb, shakespeare)
            out, peaks = run_sampled(
                [
                    sys.executable,
                    "-c",
                    PREPARE,
                    str(work / "data"),
                    str(corpus),
                    args.tokenizer,
                    str(args.num_proc),
                ],
                env,
            )
            result = json.loads(out.strip().splitlines()[-1])
            rows.append((size, result["tokens"], result["seconds"], peaks))
            if gb != max(args.gb):  # the largest one feeds the training check
                shutil.rmtree(corpus)
        print(f"\nprepare_corpus, tokenizer {args.tokenizer}, num_proc={args.num_proc}; peaks over the run")
        print(
            "| corpus | tokens | seconds | tokens/s | MiB/s | PSS, all processes | of it anonymous |", end=""
        )
        print(" RSS, main |")
        print("|---|---|---|---|---|---|---|---|")
        for size, tokens, seconds, peaks in rows:
            print(
                f"| {size / 2**30:.2f} GiB | {tokens:,} | {seconds:.0f} | {tokens / seconds:,.0f} "
                f"| {size / 2**20 / seconds:.1f} | {peaks['pss']:.0f} MiB | {peaks['pss_anon']:.0f} MiB "
                f"| {peaks['rss_main']:.0f} MiB |"
            )

        largest = work / f"corpus-{max(args.gb)}"
        if args.steps:
            train_check(args, largest, work, env)
        shakespeare_check(args, shakespeare, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def train_check(args: argparse.Namespace, largest: Path, work: Path, env: dict[str, str]) -> None:
    out, _ = run_sampled(
        [
            sys.executable,
            "-c",
            TRAIN,
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
        ],
        env,
    )
    rss = {int(s): (float(r), float(a)) for s, r, a in re.findall(r"RSS (\d+) ([\d.]+) ([\d.]+)", out)}
    print(f"\nnanogpt-train streaming from the {max(args.gb)} GB corpus (gpt_tiny, block 64, batch 8)")
    print("| step | RSS | of it anonymous |\n|---|---|---|")
    (r0, a0), (r1, a1) = rss[10], rss[args.steps]
    print(f"| 10 | {r0:.0f} MiB | {a0:.0f} MiB |")
    growth = f"({(r1 / r0 - 1) * 100:+.1f}%) | {a1:.0f} MiB ({(a1 / a0 - 1) * 100:+.1f}%)"
    print(f"| {args.steps} | {r1:.0f} MiB {growth} |")


def shakespeare_check(args: argparse.Namespace, shakespeare: Path, work: Path, env: dict[str, str]) -> None:
    print("\nTiny Shakespeare -> GPT-2 BPE, each in a fresh process")
    print("| preparation | process seconds | of it preparing | train tokens | val tokens |")
    print("|---|---|---|---|---|")
    if args.nanogpt is not None:
        folder = work / "nanogpt-shakespeare"
        shutil.copytree(args.nanogpt / "data" / "shakespeare", folder)
        shutil.copy(shakespeare, folder / "input.txt")  # so it downloads nothing
        start = time.perf_counter()
        subprocess.run([sys.executable, "prepare.py"], cwd=folder, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        sizes = [(folder / f"{s}.bin").stat().st_size // 2 for s in ("train", "val")]
        print(f"| nanoGPT data/shakespeare/prepare.py | {seconds:.1f} | | {sizes[0]:,} | {sizes[1]:,} |")
    for name, where in [
        ("nanogpt data=shakespeare_gpt2", "path=s, source=None"),
        ("nanogpt data=text", "path=None, source=s"),
    ]:
        data_dir = work / f"shakespeare-{len(name)}"
        script = (
            "import sys, time; from nanogpt.data import CorpusConfig, prepare_corpus; d, s = sys.argv[1:]; "
            f"c = CorpusConfig(data_dir=d, {where}, tokenizer='gpt2', num_proc=None, {OPTIONS}); "
            "t = time.perf_counter(); m = prepare_corpus(c).meta; "
            "print(time.perf_counter() - t, m.train_tokens, m.val_tokens)"
        )
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", script, str(data_dir), str(shakespeare)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        inside, train, val = done.stdout.split()
        print(f"| {name} | {seconds:.1f} | {float(inside):.1f} | {int(train):,} | {int(val):,} |")


if __name__ == "__main__":
    main()
