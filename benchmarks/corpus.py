"""One corpus prepared in a fresh process: the child that the ``prepare`` and ``data`` suites time.

    python -m benchmarks.corpus prepare DATA_DIR gpt2 --path input.txt     # or --source folder/
    python -m benchmarks.corpus baseline DATA_DIR gpt2                      # imports, loads the tokenizer

``prepare`` prints one line of JSON: the seconds inside ``prepare_corpus`` and, from a checkout that
has them, the tokens of each split. ``baseline`` stops before preparing, to set a process that only
imports nanogpt and loads the tokenizer's tables beside it. It imports nanogpt from wherever
``PYTHONPATH`` points (``prepare --src``): a checkout from before ``CorpusConfig`` prepares through
its ``prepare_corpus(data_dir, path=..., tokenizer=...)``.
"""

from __future__ import annotations

import argparse
import json
import time

# the corpus options of configs/data/text.yaml, but for those each run sets
OPTIONS = dict(
    url=None,
    md5=None,
    text_column="text",
    split="train",
    errors="strict",
    val_fraction=0.1,
    follow_symlinks=False,
)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("mode", choices=["prepare", "baseline"])
    cli.add_argument("data_dir")
    cli.add_argument("tokenizer")
    cli.add_argument("--path", help="a text file")
    cli.add_argument("--source", help="files, a folder or a glob (data=text's data.source)")
    cli.add_argument("--num-proc", type=int, help="tokenizing processes (default: one)")
    args = cli.parse_args()
    try:
        from nanogpt.data import CorpusConfig, prepare_corpus
    except ImportError:  # a checkout from before CorpusConfig (prepare --src)
        from nanogpt.data.prepare import prepare_corpus as before

        def prepare() -> None:
            before(args.data_dir, path=args.path, tokenizer=args.tokenizer)
    else:

        def prepare():
            known = CorpusConfig.__dataclass_fields__  # follow_symlinks since issue 21
            options = {key: value for key, value in OPTIONS.items() if key in known}
            where = dict(path=args.path, source=args.source, data_dir=args.data_dir)
            return prepare_corpus(
                CorpusConfig(**where, **options, num_proc=args.num_proc, tokenizer=args.tokenizer)
            )

    from nanogpt.data.tokenizer import GPT2Tokenizer

    if args.tokenizer == "gpt2":
        GPT2Tokenizer()  # tiktoken's tables belong to the baseline
    if args.mode == "baseline":
        return
    start = time.perf_counter()
    corpus = prepare()
    done = {"seconds": time.perf_counter() - start}
    if corpus is not None:
        done.update(train_tokens=corpus.meta.train_tokens, val_tokens=corpus.meta.val_tokens)
    print(json.dumps(done), flush=True)


def printed(output: str) -> dict:
    """What a ``prepare`` child printed: its last line of JSON (libraries may print around it)."""
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


if __name__ == "__main__":
    main()
