"""Data preparation: peak memory and seconds of ``prepare_corpus`` on a ~50 MB text.

The text is Tiny Shakespeare repeated, with a line of non-ASCII characters after each copy (so the
vocabulary and Python's string width are those of a real corpus, not of plain ASCII). Each
preparation runs in a fresh process into an empty folder; its peak RSS is read from the kernel and
set beside a baseline process that only imports nanogpt and loads the tokenizer's tables.

    python -m benchmarks prepare                       # char and gpt2, this checkout
    python -m benchmarks prepare --repeats 3 --mb 100 --tokenizers char
    python -m benchmarks prepare --mb 1 --repeats 5           # about Tiny Shakespeare's size
    git archive HEAD src | tar -x -C /tmp/before && \\
        python -m benchmarks prepare --src /tmp/before/src   # another checkout's code

Set NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt and, for gpt2 offline, TIKTOKEN_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks import text
from benchmarks.corpus import printed
from benchmarks.process import ROOT, Run, run
from benchmarks.suites import parser
from benchmarks.table import markdown


def child(mode: str, data_dir: Path, tokenizer: str, source: Path, env: dict[str, str]) -> Run:
    command = [
        sys.executable,
        "-m",
        "benchmarks.corpus",
        mode,
        str(data_dir),
        tokenizer,
        "--path",
        str(source),
    ]
    return run(command, env=env).check()


def main(argv: list[str] | None = None) -> None:
    cli = parser("prepare", __doc__)
    cli.add_argument("--mb", type=float, default=50.0, help="size of the text to prepare")
    cli.add_argument("--tokenizers", nargs="+", default=["char", "gpt2"], choices=["char", "gpt2"])
    cli.add_argument("--repeats", type=int, default=1, help="report the median seconds of this many")
    cli.add_argument("--src", type=Path, help="import nanogpt from this src folder (another checkout)")
    args = cli.parse_args(argv)
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())

    rows = []
    with tempfile.TemporaryDirectory(prefix="nanogpt-bench-prepare-") as tmp:
        root = Path(tmp)
        source = root / "input.txt"
        size = text.repeated(source, args.mb, text.shakespeare())
        for kind in args.tokenizers:
            baseline = child("baseline", root / "none", kind, source, env)
            runs = []
            for r in range(args.repeats):
                data_dir = root / f"{kind}-{r}"  # a fresh folder: nothing is prepared yet
                runs.append(child("prepare", data_dir, kind, source, env))
            (meta_path,) = data_dir.rglob("meta.json")  # the layout differs between versions
            meta = json.loads(meta_path.read_text())
            seconds = statistics.median(done.wall for done in runs)
            preparing = statistics.median(printed(done.output)["seconds"] for done in runs)
            peak = max(done.peak_rss_mib for done in runs)
            rows.append(
                (
                    kind,
                    f"{meta['train_tokens'] + meta['val_tokens']:,}",
                    meta["dtype"],
                    f"{seconds:.1f}",
                    f"{preparing:.3f}",
                    f"{baseline.wall:.1f}",
                    f"{peak:.0f}",
                    f"{baseline.peak_rss_mib:.0f}",
                    f"{peak - baseline.peak_rss_mib:.0f}",
                )
            )

    nanogpt_src = args.src or ROOT / "src"
    print(
        f"\nprepare_corpus on a {size / 2**20:.1f} MiB text, nanogpt from {nanogpt_src}; "
        f"median seconds and largest peak RSS of {args.repeats} (whole processes, and the time inside "
        "prepare_corpus; the baseline only imports and loads the tokenizer)"
    )
    columns = ["tokenizer", "tokens", "dtype", "seconds", "preparing s", "baseline s", "peak RSS MiB"]
    print(markdown([*columns, "baseline MiB", "peak - baseline"], rows, right=range(1, 9)))
