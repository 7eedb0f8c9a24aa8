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
    NANOGPT_SHAKESPEARE_PATH=/path/to/input.txt python -m benchmarks sample --nanogpt /tmp/nanoGPT
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path

import torch

from benchmarks import nanogpt_ref, text
from benchmarks.process import console_script, output_folder, run
from benchmarks.stats import Spread, alternate, ratios
from benchmarks.suites import parser
from benchmarks.table import markdown
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


def main(argv: list[str] | None = None) -> None:
    cli = parser("sample", __doc__)
    cli.add_argument("--nanogpt", type=Path, required=True, help="a checkout of karpathy/nanoGPT")
    cli.add_argument("--new-tokens", type=int, default=500)
    cli.add_argument("--num-samples", type=int, default=1)
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--out", type=Path, help="scratch folder (default: a new temporary folder)")
    args = cli.parse_args(argv)
    if why := nanogpt_ref.missing(args.nanogpt, nanogpt_ref.SAMPLE_FILES):
        cli.error(why)
    # its characters are the vocabulary
    shakespeare = text.shakespeare()

    root = output_folder(args.out, "nanogpt-sample-bench-")
    ours, theirs = write_checkpoints(root, shakespeare.read_text(encoding="utf-8"))
    nanogpt_ref.copy(args.nanogpt, theirs, nanogpt_ref.SAMPLE_FILES)

    n, k = args.new_tokens, args.num_samples
    commands = {
        "nanogpt-sample (KV cache)": (
            [console_script("nanogpt-sample"), f"ckpt_path={ours}", f"num_samples={k}", f"max_new_tokens={n}"]
            + ["device=cpu"],
            None,
        ),
        "nanoGPT sample.py": (
            [sys.executable, "sample.py", "--out_dir=out", "--device=cpu", f"--num_samples={k}"]
            + [f"--max_new_tokens={n}", "--compile=False"],
            theirs,
        ),
    }
    names = list(commands)

    def measure(name: str, r: int) -> float:
        command, cwd = commands[name]
        return run(command, root / f"{names.index(name)}-{r}.log", cwd=cwd).check().wall

    walls = alternate(names, args.repeats, measure, show=lambda wall: f"{wall:.1f}s")
    shape = ", ".join(f"{key} {value}" for key, value in SHAPE.items())
    print(
        f"\n{k} sample(s) x {n} new tokens ({shape}), CPU, {torch.get_num_threads()} threads; "
        f"whole process, median of {args.repeats} (min-max)"
    )
    rows = [
        (name, Spread.of(times).text(2), Spread.of(ratios(times, walls[names[1]])).text(2, "x"))
        for name, times in walls.items()
    ]
    print(markdown(["command", "wall s", "against sample.py"], rows))
    print(f"files kept in {root}")
