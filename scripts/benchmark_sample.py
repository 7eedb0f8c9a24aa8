"""Sampling as users time it: the whole ``nanogpt-sample`` command against nanoGPT's ``sample.py``.

Both load a checkpoint of the same shape and the same weights (shakespeare_char's 6 layers x 6
heads x 384 channels, context 256, the 65 characters of Tiny Shakespeare; random weights, since
speed does not depend on them) and write ``--num-samples`` x ``--new-tokens`` characters at
temperature 0.8 and top-k 200 on the CPU, with torch's default threads. Each is timed as a whole
process, start-up included, and the two alternate ``--repeats`` times.

nanoGPT's ``sample.py``, ``model.py`` and ``configurator.py`` are copied from the checkout you
name into a scratch folder beside its ``ckpt.pt`` and ``data/shakespeare_char/meta.pkl``, so the
checkout itself is left untouched.

    git clone https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt python scripts/benchmark_sample.py --nanogpt /tmp/nanoGPT
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pickle
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmark import run_timed  # scripts/benchmark.py, beside this file
from nanogpt.data import CharTokenizer
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.checkpoint import CHECKPOINT_FORMAT, MODEL_PREFIX

SHAPE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "bias": False, "dropout": 0.0}


def write_checkpoints(root: Path, text: str) -> tuple[Path, Path]:
    """One model, saved as a nanogpt checkpoint and as nanoGPT's ``out_dir/ckpt.pt`` (with meta.pkl)."""
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    config = GPTConfig(**SHAPE, vocab_size=tokenizer.vocab_size)
    state = GPT(config).state_dict()

    ours = root / "nanogpt" / "model.ckpt"
    ours.parent.mkdir(parents=True)
    hparams = {
        "model": dataclasses.asdict(config),
        "tokenizer": tokenizer.meta(),
        "format": CHECKPOINT_FORMAT,
    }
    torch.save(
        {"state_dict": {MODEL_PREFIX + k: v for k, v in state.items()}, "hyper_parameters": hparams}, ours
    )

    theirs = root / "nanoGPT"
    (theirs / "out").mkdir(parents=True)
    model_args = {**SHAPE, "vocab_size": tokenizer.vocab_size}
    checkpoint = {
        "model": state,
        "model_args": model_args,
        "iter_num": 0,
        "config": {"dataset": "shakespeare_char"},
    }
    torch.save(checkpoint, theirs / "out" / "ckpt.pt")
    meta = {
        "vocab_size": tokenizer.vocab_size,
        "itos": dict(enumerate(tokenizer.vocab)),
        "stoi": {ch: i for i, ch in enumerate(tokenizer.vocab)},
    }
    (theirs / "data" / "shakespeare_char").mkdir(parents=True)
    with open(theirs / "data" / "shakespeare_char" / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="scratch folder (default: a new temporary folder)")
    args = parser.parse_args()

    source = os.environ.get("NANOGPT_SHAKESPEARE_PATH")
    if not source or not Path(source).is_file():
        sys.exit(
            "set NANOGPT_SHAKESPEARE_PATH to Tiny Shakespeare's input.txt (its characters are the vocabulary)"
        )
    missing = [n for n in ("sample.py", "model.py", "configurator.py") if not (args.nanogpt / n).is_file()]
    if missing:
        sys.exit(f"{args.nanogpt} is not a nanoGPT checkout (no {', '.join(missing)}); pass --nanogpt")

    root = args.out or Path(tempfile.mkdtemp(prefix="nanogpt-sample-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    ours, theirs = write_checkpoints(root, Path(source).read_text(encoding="utf-8"))
    for name in ("sample.py", "model.py", "configurator.py"):
        shutil.copy(args.nanogpt / name, theirs / name)

    n, k = args.new_tokens, args.num_samples
    sample_cmd = str(Path(sys.executable).with_name("nanogpt-sample"))
    commands = {
        "nanogpt-sample (KV cache)": (
            [sample_cmd, f"ckpt_path={ours}", f"num_samples={k}", f"max_new_tokens={n}", "device=cpu"],
            None,
        ),
        "nanoGPT sample.py": (
            [sys.executable, "sample.py", "--out_dir=out", "--device=cpu", f"--num_samples={k}"]
            + [f"--max_new_tokens={n}", "--compile=False"],
            theirs,
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for r in range(args.repeats):
        for i, (name, (cmd, cwd)) in enumerate(commands.items()):
            walls[name].append(run_timed(cmd, root / f"{i}-{r}.log", cwd=cwd)[0])
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{m} {w[-1]:.1f}s" for m, w in walls.items()))

    shape = ", ".join(f"{key} {value}" for key, value in SHAPE.items())
    print(
        f"\n{k} sample(s) x {n} new tokens ({shape}), CPU, {torch.get_num_threads()} threads; "
        f"whole process, median of {args.repeats} (min-max)"
    )
    print("| command | wall s | against sample.py |")
    print("|---|---|---|")
    first, second = walls
    for name, times in walls.items():
        ratios = [a / b for a, b in zip(times, walls[second], strict=True)]
        spread = f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})"
        print(
            f"| {name} | {spread} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    print(f"files kept in {root}")


if __name__ == "__main__":
    main()
