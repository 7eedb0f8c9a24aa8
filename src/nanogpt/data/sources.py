"""Any corpus as a prepared token folder, through Hugging Face ``datasets`` (``data=text``).

``data.source`` names the corpus:

- a text file, a folder (its ``.txt`` and ``.md`` files, recursively) or a glob of them: each file is
  a document, read in UTF-8 (``data.errors=replace`` reads stray bytes as U+FFFD);
- local ``.jsonl``/``.json``, ``.csv`` or ``.parquet`` files (a path, folder or glob, as above), read by
  ``datasets``' own builders: each row's ``data.text_column`` is a document;
- ``hf:<folder>``: a dataset written by ``save_to_disk`` (``data.split`` picks from a DatasetDict);
- ``hf:<name>[:<config>]``: a dataset of the Hugging Face Hub, ``data.split`` of it.

Preparation makes the corpus a ``datasets.Dataset`` (Arrow files on disk, memory-mapped, so a corpus
larger than RAM is never held whole), tokenizes it with ``map(batched=True, num_proc=...)`` under a
progress bar, and writes the same folder that :mod:`nanogpt.data.prepare` writes for one text:
``train.bin``, ``val.bin``, ``meta.json``, named by the tokenizer, a checksum of the corpus and the
val fraction, built under a temporary name and renamed whole. A second run finds it and starts at
once.

Every document ends with the tokenizer's end-of-text token (``<|endoftext|>`` for GPT-2, as
nanoGPT's OpenWebText preparation does); a char vocabulary has none, so its documents end with a
blank line. A text file is cut into pieces at places where the BPE never joins two pieces, so its
tokens are those of the whole file. The last ``val_fraction`` of the tokens is the val split.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt.data.prepare import (
    FORMAT_VERSION,
    bpe_cut,
    check_options,
    checked_meta,
    corpus_name,
    file_md5,
    prepare_corpus,
    publishing,
    remove_dead_preparations,
    text_chunks,
    token_dtype,
)
from nanogpt.data.tokenizer import Tokenizer, build_tokenizer

HF_PREFIX = "hf:"
TEXT_SUFFIXES = (".txt", ".md")
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
PIECE_BYTES = 1 << 16  # a text file's rows: small, so that a batch of them stays small in memory
SHARD_BYTES = 256 << 20  # the corpus is tokenized a shard at a time, each by new worker processes
CHAR_DOCUMENT_END = "\n\n"


@dataclass
class Source:
    """What ``data.source`` names, resolved: its files or its dataset, and a checksum of its contents."""

    description: str
    key: str  # md5 hex of everything that decides the tokens (contents, column, split)
    text_files: list[Path] = field(default_factory=list)  # documents read as text, in order
    builder: str | None = None  # json, csv or parquet, over builder_files
    builder_files: list[Path] = field(default_factory=list)
    saved: Path | None = None  # a save_to_disk folder
    hub: tuple[str, str | None] | None = None  # (name, config) on the Hugging Face Hub
    split: str = "train"
    text_column: str = "text"
    dataset: Any = field(default=None, repr=False)  # once opened: the key needs it, and so does the build


def _md5(*parts: str) -> str:
    return hashlib.md5("\n".join(parts).encode()).hexdigest()


def _expand(pattern: str) -> list[Path]:
    """The files a path, folder or glob names, sorted; a folder gives its text files, recursively."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES]
        if not files:  # a folder of JSON-lines, CSV or Parquet files
            files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in BUILDERS]
        return sorted(files)
    if path.is_file():
        return [path]
    return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())


def resolve_source(source: str, text_column: str = "text", split: str = "train") -> Source:
    """Find what ``data.source`` names; see the module docstring. Reads files only to checksum them."""
    source = str(source)
    if source.startswith(HF_PREFIX):
        return _hf_source(source[len(HF_PREFIX) :], text_column, split)
    files = _expand(source)
    if not files:
        raise FileNotFoundError(
            f"data.source={source} matches no files; pass a text file, a folder of .txt/.md files, a "
            "glob such as 'data.source=\"corpus/**/*.txt\"', local .jsonl/.csv/.parquet files, or "
            "hf:<dataset name or save_to_disk folder>"
        )
    kinds = {"text" if p.suffix.lower() in TEXT_SUFFIXES else BUILDERS.get(p.suffix.lower()) for p in files}
    if None in kinds:
        known = (*TEXT_SUFFIXES, *BUILDERS)
        odd = sorted({p.suffix or p.name for p in files if p.suffix.lower() not in known})
        raise ValueError(
            f"data.source={source} matches files nanogpt cannot read as text ({', '.join(odd)}); it reads "
            f"{', '.join(TEXT_SUFFIXES)} as text and {', '.join(BUILDERS)} through datasets. Narrow the "
            "glob, e.g. 'data.source=\"corpus/**/*.txt\"'"
        )
    if len(kinds) > 1:
        raise ValueError(
            f"data.source={source} mixes kinds of files ({', '.join(sorted(kinds))}); prepare one kind "
            "at a time, e.g. with a glob such as 'data.source=\"corpus/**/*.txt\"'"
        )
    (kind,) = kinds
    sums = [file_md5(p) for p in files]
    if kind == "text":
        return Source(f"{len(files)} text file(s) from {source}", _md5("text", *sums), text_files=files)
    return Source(
        f"{len(files)} {kind} file(s) from {source}, column {text_column}",
        _md5(kind, text_column, *sums),
        builder=kind,
        builder_files=files,
        text_column=text_column,
    )


def _hf_source(name: str, text_column: str, split: str) -> Source:
    folder = Path(name).expanduser()
    if folder.is_dir():
        return Source(
            f"the saved dataset {folder}, split {split}, column {text_column}",
            "",  # the dataset's own fingerprint, read when it is opened
            saved=folder,
            split=split,
            text_column=text_column,
        )
    dataset, _, config = name.partition(":")
    return Source(
        f"the Hugging Face dataset {name}, split {split}, column {text_column}",
        "",
        hub=(dataset, config or None),
        split=split,
        text_column=text_column,
    )


def open_dataset(source: Source, cache_dir: Path | None = None) -> Any:
    """The source as a ``datasets.Dataset`` of documents in its ``text_column``; fills in its key.

    Opened once: a second call returns the same dataset.
    """
    if source.dataset is not None:
        return source.dataset
    import datasets

    if source.builder is not None:
        ds = datasets.load_dataset(
            source.builder,
            data_files=[str(p) for p in source.builder_files],
            split="train",
            cache_dir=str(cache_dir) if cache_dir else None,
        )
    elif source.saved is not None:
        try:
            ds = datasets.load_from_disk(str(source.saved))
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{source.saved} is not a dataset written by save_to_disk ({err}); pass "
                "data.source=hf:<folder of Dataset.save_to_disk>, or data.source=<folder> for text files"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                raise ValueError(
                    f"the saved dataset {source.saved} has no split {source.split!r}; pass one of "
                    + ", ".join(f"data.split={s}" for s in ds)
                )
            ds = ds[source.split]
        source.key = _md5("saved", source.split, source.text_column, *_arrow_files(ds))
    else:
        name, config = source.hub
        try:
            ds = datasets.load_dataset(name, config, split=source.split)
        except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:
            raise FileNotFoundError(
                f"could not load the Hugging Face dataset {name!r} (config {config}, split "
                f"{source.split}): {type(err).__name__}: {err}. With no network, save it once where there "
                "is one (datasets.load_dataset(...).save_to_disk('folder')) and pass data.source=hf:folder"
            ) from None
        source.key = _md5("hub", name, str(config), source.split, source.text_column, *_arrow_files(ds))
    if source.text_column not in ds.column_names:
        raise ValueError(
            f"{source.description} has no column {source.text_column!r}; its columns are "
            + ", ".join(ds.column_names)
            + f". Pass data.text_column=<one of them> (e.g. data.text_column={ds.column_names[0]})"
        )
    source.dataset = ds.select_columns([source.text_column])
    return source.dataset


def _arrow_files(ds: Any) -> list[str]:
    """What identifies a dataset's contents without reading them: its Arrow files' names, sizes and
    modification times (``datasets`` writes new files for new contents)."""
    files = [Path(c["filename"]) for c in ds.cache_files]
    return [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(files)]


def _file_rows(files: list[Path], cut_anywhere: bool, errors: str) -> Iterator[dict[str, Any]]:
    """The rows of text files: pieces of each file (cut where BPE starts afresh), the last one ending it."""
    for path in files:
        buf, previous = "", None
        for chunk in text_chunks(path, errors=errors, size=PIECE_BYTES):
            buf += chunk
            if i := len(buf) if cut_anywhere else bpe_cut(buf):
                if previous is not None:
                    yield {"text": previous, "doc_end": False}
                previous, buf = buf[:i], buf[i:]
        if buf:
            if previous is not None:
                yield {"text": previous, "doc_end": False}
            previous = buf
        if previous:  # an empty file is no document
            yield {"text": previous, "doc_end": True}


def _rows(source: Source, cache_dir: Path, tokenizer: str, errors: str, num_proc: int | None) -> Any:
    """The source as a dataset of rows ``text`` and ``doc_end`` (the row ends a document)."""
    import datasets

    if source.text_files:
        if not any(path.stat().st_size for path in source.text_files):
            raise ValueError(f"{source.description} holds no text; point data.source at files with text")
        features = datasets.Features({"text": datasets.Value("string"), "doc_end": datasets.Value("bool")})
        try:
            return datasets.Dataset.from_generator(
                _file_rows,
                features=features,
                cache_dir=str(cache_dir),
                gen_kwargs={
                    "files": source.text_files,
                    "cut_anywhere": tokenizer == "char",
                    "errors": errors,
                },
                fingerprint=_md5(source.key, errors),
                split="train",
                writer_batch_size=64,  # rows of PIECE_BYTES each: a few MiB of text in memory at a time
            )
        except datasets.exceptions.DatasetGenerationError as err:
            if isinstance(err.__cause__, ValueError):  # a file that is not UTF-8: our message, not theirs
                raise err.__cause__ from None
            raise
    ds = open_dataset(source, cache_dir)
    # every row is a document (no doc_end column)
    return ds.rename_column(source.text_column, "text") if source.text_column != "text" else ds


def _sharded_map(
    rows: Any, function: Any, cache: Path, name: str, num_proc: int | None, **kwargs: Any
) -> Any:
    """``rows.map(function, batched=True, ...)`` over contiguous shards of about ``SHARD_BYTES``.

    Each shard gets worker processes of its own, which end with it: a worker's pages of the
    memory-mapped corpus count as its memory while it lives, so one worker over the whole corpus
    would grow towards the corpus' size. The shards' results are concatenated in order.
    """
    import datasets

    n_shards = max(1, -(-rows.data.nbytes // SHARD_BYTES))  # ceil
    per_shard = -(-len(rows) // n_shards)
    parts = []
    for i, start in enumerate(range(0, len(rows), per_shard)):
        shard = rows.select(range(start, min(start + per_shard, len(rows))))  # contiguous: no copy
        parts.append(
            shard.map(
                function,
                batched=True,
                num_proc=_num_proc(num_proc, len(shard)),
                remove_columns=shard.column_names,
                **kwargs,
                **_cache(cache, f"{name}-{i:05d}"),
            )
        )
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def _cache(cache_dir: Path, name: str) -> dict[str, Any]:
    # map's results go into the temporary folder, not datasets' cache, and leave with it
    return {"cache_file_name": str(cache_dir / f"{name}.arrow"), "load_from_cache_file": False}


@functools.lru_cache(maxsize=4)
def _tokenizer(kind: str, vocab: tuple[str, ...] | None) -> Tokenizer:
    return build_tokenizer(kind, vocab or ())


def _texts(batch: dict[str, list]) -> list[str]:
    return [t or "" for t in batch["text"]]  # a row without text (None) is an empty document


def _characters(batch: dict[str, list]) -> dict[str, list]:
    return {"chars": ["".join(set("".join(_texts(batch))))]}


def _encode(batch: dict[str, list], kind: str, vocab: tuple[str, ...] | None) -> dict[str, list]:
    tok = _tokenizer(kind, vocab)
    texts = _texts(batch)
    doc_end = batch.get("doc_end") or [True] * len(texts)  # a dataset's rows are whole documents
    if kind == "char":
        ends = [CHAR_DOCUMENT_END if end else "" for end in doc_end]
        ids = [tok.encode(t + e) for t, e in zip(texts, ends, strict=True)]
        chars = [len(t) + len(e) for t, e in zip(texts, ends, strict=True)]
    else:
        ids = tok.encode_batch(texts)
        for row, end in zip(ids, doc_end, strict=True):
            if end:
                row.append(tok.eot_token)
        chars = [len(t) for t in texts]
    return {"ids": ids, "chars": chars}


def _num_proc(num_proc: int | None, rows: int) -> int:
    # a process per ~64 rows at least: forking costs more than tokenizing a small corpus
    wanted = num_proc if num_proc is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, rows // 64))


def _locate(
    data_dir: str | os.PathLike, source: str, tokenizer: str, val_fraction: float, **options: str
) -> tuple[Source, str, Path]:
    """The resolved source, its key (with ``errors``), and the prepared folder it has or will have."""
    check_options(tokenizer, val_fraction)
    if options["errors"] not in ("strict", "replace"):
        raise ValueError(f"data.errors must be strict or replace, got {options['errors']!r}")
    resolved = resolve_source(source, options["text_column"], options["split"])
    if not resolved.key:  # a dataset's fingerprint is known once it is open
        open_dataset(resolved)
    key = _md5(resolved.key, options["errors"])
    return resolved, key, Path(data_dir) / corpus_name(tokenizer, key, val_fraction)


def prepare_source(
    data_dir: str | os.PathLike,
    source: str,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    text_column: str = "text",
    split: str = "train",
    errors: str = "strict",
    num_proc: int | None = None,
) -> dict:
    """Make sure ``data_dir`` holds the prepared folder of ``source``; return its checked metadata.

    ``num_proc`` tokenizing processes (``None``: one per core, fewer for a small corpus).
    """
    resolved, key, folder = _locate(
        data_dir, source, tokenizer, val_fraction, text_column=text_column, split=split, errors=errors
    )
    remove_dead_preparations(data_dir)
    if not folder.is_dir():
        _build(resolved, key, folder, tokenizer, val_fraction, errors, num_proc)
    return checked_meta(folder, key)


def find_source(
    data_dir: str | os.PathLike,
    source: str,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
    text_column: str = "text",
    split: str = "train",
    errors: str = "strict",
) -> dict:
    """The metadata of an already prepared source; builds nothing (for DDP ranks but local rank 0)."""
    _, key, folder = _locate(
        data_dir, source, tokenizer, val_fraction, text_column=text_column, split=split, errors=errors
    )
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data.source={source} is not prepared: no folder {folder}. Call prepare_data() first; under "
            "DDP local rank 0 prepares it, so every rank on a machine must see the same data.data_dir"
        )
    return checked_meta(folder, key)


def _build(
    source: Source,
    key: str,
    folder: Path,
    kind: str,
    val_fraction: float,
    errors: str,
    num_proc: int | None,
) -> None:
    import datasets
    import pyarrow.compute as pc

    with publishing(folder) as tmp:
        cache = tmp / "cache"
        rows = _rows(source, cache, kind, errors, num_proc)
        if len(rows) == 0:
            raise ValueError(f"{source.description} holds no text; point data.source at a corpus with text")
        vocab, found = None, None
        if kind == "char":
            found = _sharded_map(
                rows, _characters, cache, "chars", num_proc, batch_size=64, desc="collecting characters"
            )
            vocab = tuple(sorted(set("".join(found["chars"])) | set(CHAR_DOCUMENT_END)))
        tok = _tokenizer(kind, vocab)
        tokens = _sharded_map(
            rows,
            _encode,
            cache,
            "tokens",
            num_proc,
            batch_size=64,
            writer_batch_size=64,  # rows of a text file hold 64 KiB each: keep a batch small
            fn_kwargs={"kind": kind, "vocab": vocab},
            features=datasets.Features(
                {"ids": datasets.Sequence(datasets.Value("uint32")), "chars": datasets.Value("int64")}
            ),
            desc=f"tokenizing ({kind})",
        )
        meta = _write_splits(tokens, tok, tmp, val_fraction)
        if meta["train_tokens"] == 0 or meta["val_tokens"] == 0:
            raise ValueError(f"{source.description} holds no text; point data.source at a corpus with text")
        meta.update(
            format_version=FORMAT_VERSION,
            source_md5=key,
            val_fraction=float(val_fraction),
            source=source.description,
            documents=int(pc.sum(rows.data.column("doc_end")).as_py())
            if "doc_end" in rows.column_names
            else len(rows),
            tokenizer=tok.meta(),
        )
        del rows, tokens, found  # datasets' memory-mapped files, before their folder goes
        shutil.rmtree(cache)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # the rename publishes it


def _record_batches(dataset: Any) -> Iterator[Any]:
    """The dataset's Arrow record batches, read from its cache files in order.

    Read, not memory-mapped: touching every page of a mapped file would put the whole corpus in
    this process's resident memory (as page cache, but counted all the same).
    """
    import pyarrow as pa

    for cache in dataset.cache_files:
        with pa.OSFile(cache["filename"]) as f:
            yield from pa.ipc.open_stream(f)


def _write_splits(tokens: Any, tok: Tokenizer, folder: Path, val_fraction: float) -> dict:
    """Stream the ``ids`` column into ``train.bin`` (the first tokens) and ``val.bin`` (the last)."""
    import pyarrow.compute as pc

    total = int(pc.sum(pc.list_value_length(tokens.data.column("ids"))).as_py() or 0)
    n_train = int(total * (1.0 - val_fraction))
    dtype = token_dtype(tok.vocab_size)
    written, train_chars, val_chars = 0, 0, 0
    with open(folder / "train.bin", "wb") as train, open(folder / "val.bin", "wb") as val:
        for batch in _record_batches(tokens):
            ids = batch.column("ids")
            values = ids.flatten().to_numpy(zero_copy_only=False).astype(dtype)
            counts = pc.list_value_length(ids).to_numpy(zero_copy_only=False)
            cut = min(max(n_train - written, 0), len(values))
            train.write(values[:cut].tobytes())
            val.write(values[cut:].tobytes())
            # characters per split, for bits per character: rows wholly on one side, and the row cut in two
            ends = np.cumsum(counts) + written
            starts = ends - counts
            row_chars = batch.column("chars").to_numpy(zero_copy_only=False)
            train_chars += int(row_chars[ends <= n_train].sum())
            val_chars += int(row_chars[starts >= n_train].sum())
            for r in np.flatnonzero((starts < n_train) & (ends > n_train)):
                head_ids = values[starts[r] - written : n_train - written]
                head = len(tok.decode([int(t) for t in head_ids if t != _eot(tok)]))
                train_chars += head
                val_chars += int(row_chars[r]) - head
            written += len(values)
    if written != total:
        raise RuntimeError(f"wrote {written:,} tokens of {total:,}: the tokenized cache is incomplete")
    return {
        "source_chars": train_chars + val_chars,
        "train_tokens": n_train,
        "val_tokens": total - n_train,
        "train_chars": train_chars,
        "val_chars": val_chars,
        "dtype": dtype.name,
    }


def _eot(tok: Tokenizer) -> int | None:
    return getattr(tok, "eot_token", None)


def prepare_data_group(data: Any) -> dict:
    """The prepared folder's metadata for a ``data`` config group, by ``data.source`` or ``data.path``.

    For the tools that read a corpus without the DataModule (``nanogpt-eval``, benchmarks).
    """
    if data.get("source") is not None:
        return prepare_source(
            data.data_dir,
            data.source,
            data.tokenizer,
            data.val_fraction,
            data.get("text_column", "text"),
            data.get("split", "train"),
            data.get("errors", "strict"),
            data.get("num_proc"),
        )
    return prepare_corpus(data.data_dir, data.path, data.url, data.md5, data.tokenizer, data.val_fraction)
