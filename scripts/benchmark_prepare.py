"""Benchmark data preparation: peak memory and seconds of ``prepare_corpus`` on a ~50 MB text.

The text is Tiny Shakespeare repeated, with a line of non-ASCII characters after each copy (so the
vocabulary and Python's string width are those of a real corpus, not of plain ASCII). Each
preparation runs in a fresh process into an empty folder; its peak RSS is read from the kernel and
set beside a baseline process that only imports nanogpt and loads the tokenizer's tables.

    python scripts/benchmark_prepare.py                       # char and gpt2, this checkout
    python scripts/benchmark_prepare.py --repeats 3 --mb 100 --tokenizers char
    python scripts/benchmark_prepare.py --mb 1 --repeats 5           # about Tiny Shakespeare's size
    git archive HEAD src | tar -x -C /tmp/before && \\
        python scripts/benchmark_prepare.py --src /tmp/before/src   # another checkout's code

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt and, for gpt2 offline, TIKTOKEN_CACHE_DIR.
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

EXTRA = "Café — naïve “quoted” 日本語 ½\n"

# argv: mode (prepare | baseline), text, data_dir, tokenizer; prints the seconds preparing took
CHILD = """
import sys, time
mode, text, data_dir, kind = sys.argv[1:]
try:
    from nanogpt.data import CorpusConfig, prepare_corpus
except ImportError:  # a checkout from before CorpusConfig (--src)
    from nanogpt.data.prepare import prepare_corpus as before

    def prepare():
        before(data_dir, path=text, tokenizer=kind)
else:
    def prepare():
        options = dict(url=None, md5=None, source=None, text_column="text", split="train", errors="strict")
        if "follow_symlinks" in CorpusConfig.__dataclass_fields__:  # since issue 21
            options["follow_symlinks"] = False
        config = CorpusConfig(data_dir, text, **options, num_proc=None, tokenizer=kind, val_fraction=0.1)
        prepare_corpus(config)
from nanogpt.data.tokenizer import GPT2Tokenizer
if kind == "gpt2":
    GPT2Tokenizer()  # tiktoken's tables belong to the baseline
if mode == "prepare":
    start = time.perf_counter()
    prepare()
    print(time.perf_counter() - start)
"""


def build_text(dest: Path, mb: float) -> int:
    shakespeare = Path(os.environ.get("NANOGPT_SHAKESPEARE_PATH", "data/shakespeare_char/input.txt"))
    if not shakespeare.is_file():
        sys.exit(f"no text at {shakespeare}; set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt")
    copy = shakespeare.read_bytes() + EXTRA.encode()
    with dest.open("wb") as f:
        for _ in range(max(1, round(mb * 2**20 / len(copy)))):
            f.write(copy)
    return dest.stat().st_size


def run_child(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run the child; return wall seconds, the seconds it spent preparing, and its peak RSS in MiB."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the {args[0]} process failed")
    preparing = float(out) if out.strip() else 0.0
    return time.perf_counter() - start, preparing, usage.ru_maxrss / 1024  # ru_maxrss: KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=50.0, help="size of the text to prepare")
    parser.add_argument("--tokenizers", nargs="+", default=["char", "gpt2"], choices=["char", "gpt2"])
    parser.add_argument("--repeats", type=int, default=1, help="report the median seconds of this many")
    parser.add_argument("--src", type=Path, help="import nanogpt from this src folder (another checkout)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())

    rows = []
    with tempfile.TemporaryDirectory(prefix="nanogpt-bench-prepare-") as tmp:
        root = Path(tmp)
        text = root / "input.txt"
        size = build_text(text, args.mb)
        for kind in args.tokenizers:
            start_seconds, _, baseline = run_child(["baseline", str(text), str(root / "none"), kind], env)
            runs = []
            for r in range(args.repeats):
                data_dir = root / f"{kind}-{r}"  # a fresh folder: nothing is prepared yet
                runs.append(run_child(["prepare", str(text), str(data_dir), kind], env))
            (meta_path,) = data_dir.rglob("meta.json")  # the layout differs between versions
            meta = json.loads(meta_path.read_text())
            seconds, peak = statistics.median(s for s, _, _ in runs), max(p for _, _, p in runs)
            preparing = statistics.median(p for _, p, _ in runs)
            tokens = meta["train_tokens"] + meta["val_tokens"]
            rows.append((kind, tokens, meta["dtype"], seconds, preparing, start_seconds, peak, baseline))

    nanogpt_src = args.src or Path(__file__).resolve().parents[1] / "src"
    print(
        f"\nprepare_corpus on a {size / 2**20:.1f} MiB text, nanogpt from {nanogpt_src}; "
        f"median seconds and largest peak RSS of {args.repeats} (whole processes, and the time inside "
        "prepare_corpus; the baseline only imports and loads the tokenizer)"
    )
    header = (
        f"| {'tokenizer':<9} | {'tokens':>11} | {'dtype':>6} | {'seconds':>7} | {'preparing s':>11} "
        f"| {'baseline s':>10} | {'peak RSS MiB':>12} | {'baseline MiB':>12} | {'peak - baseline':>15} |"
    )
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    for kind, tokens, dtype, seconds, preparing, start_seconds, peak, baseline in rows:
        print(
            f"| {kind:<9} | {tokens:>11,} | {dtype:>6} | {seconds:>7.1f} | {preparing:>11.3f} "
            f"| {start_seconds:>10.1f} | {peak:>12.0f} | {baseline:>12.0f} | {peak - baseline:>15.0f} |"
        )


if __name__ == "__main__":
    main()
