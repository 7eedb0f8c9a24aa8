"""Every kind of input as one thing: a stream of documents, and a checksum of what decides them.

``data.path`` is one text file: by default ``data_dir/input.txt``, downloaded from ``data.url`` (and
checked against ``data.md5``) when missing. ``data.source``, when set, names any corpus instead:

- a text file, a folder (its ``.txt`` and ``.md`` files, recursively) or a glob of them: each file is
  a document;
- local ``.jsonl``/``.json``, ``.csv`` or ``.parquet`` files (a path, folder or glob, as above), read by
  ``datasets``' own builders: each row's ``data.text_column`` is a document;
- ``hf:<folder>``: a dataset written by ``save_to_disk`` (``data.split`` picks from a DatasetDict);
- ``hf:<name>[:<config>]``: a dataset of the Hugging Face Hub, ``data.split`` of it.

A :class:`Source` gives its documents, each as pieces of text read a chunk at a time, so no file or
row batch is held longer than it takes to pass it on; :mod:`nanogpt.data.encode` tokenizes them.
Text files are read as UTF-8 as ``bytes.decode`` reads them (no newline translation);
``data.errors=replace`` reads stray bytes as U+FFFD. :meth:`Source.checksum` is what names the
prepared folder: the md5 of a single text file (so ``data.path=f`` and ``data.source=f`` are one
corpus), or of the files' md5s, the builder and column, or of a dataset's Arrow files.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogpt.files import write_atomically

HF_PREFIX = "hf:"
TEXT_SUFFIXES = (".txt", ".md")
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
# How much of a text file is read and decoded at a time, and how much of a dataset's row is passed
# on: small enough that the pieces in flight (a few per tokenizing process) cost little memory.
CHUNK_BYTES = 1 << 18
CHUNK_CHARS = 1 << 18


def _md5(*parts: str) -> str:
    return hashlib.md5("\n".join(parts).encode()).hexdigest()


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Source:
    """A corpus, resolved: where its documents come from. Nothing is read until asked."""

    description: str  # what it is, in words (meta.json's ``source``)
    kind: str  # text, json, csv or parquet (over ``files``), saved or hub (a dataset)
    files: list[Path] = field(default_factory=list)  # in document order
    location: str = ""  # the save_to_disk folder, or the Hub name
    config: str | None = None  # the Hub dataset's config
    split: str | None = None  # of a saved or Hub dataset
    text_column: str | None = None  # of a dataset, or of the builders' files
    errors: str | None = None  # how text files' bytes that are not UTF-8 are read
    # once opened: the checksum needs it, and so do the documents
    _dataset: Any = field(default=None, repr=False)
    # the text files' md5s, taken by checksum(), to catch a file changed mid-preparation
    _file_md5s: list[str] | None = field(default=None, repr=False)

    def checksum(self) -> str:
        """The md5 (hex) of everything that decides the documents: the one place that reads a whole
        local corpus to name it, so a test can count how often that happens."""
        if self.kind in ("saved", "hub"):
            ds = self.dataset()  # Arrow files: datasets writes new ones for new contents
            files = [Path(c["filename"]) for c in ds.cache_files]
            stamps = [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(files)]
            name = [self.location, str(self.config)] if self.kind == "hub" else []
            return _md5(self.kind, *name, self.split, self.text_column, *stamps)
        self._file_md5s = [file_md5(path) for path in self.files]
        if self.kind == "text":
            # one file's md5 is its own, so one text file names one folder however it was given
            checksum = self._file_md5s[0] if len(self.files) == 1 else _md5(*self._file_md5s)
            # bytes read as U+FFFD make other text than the file's: a folder of its own, so a strict
            # run never uses the replaced text
            return _md5(checksum, "errors=replace") if self.errors == "replace" else checksum
        return _md5(self.kind, self.text_column, *self._file_md5s)

    def documents(self, scratch: Path | None = None) -> Iterator[Iterator[str]]:
        """The documents in order, each an iterator of its text in pieces (empty ones included).

        ``scratch``: where ``datasets``' builders may write their Arrow files (a preparation's
        temporary folder, so they leave with it), instead of the Hugging Face cache.
        """
        if self.kind == "text":
            for i, path in enumerate(self.files):
                expected = self._file_md5s[i] if self._file_md5s else None
                yield text_chunks(path, self.errors, expected)
            return
        for batch in _record_batches(self.dataset(scratch)):
            for text in batch.column(self.text_column).to_pylist():
                text = text or ""  # a row without text (None) is an empty document
                yield (text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS))

    def dataset(self, scratch: Path | None = None) -> Any:
        """The source as a ``datasets.Dataset`` with a ``text_column``; opened once."""
        if self._dataset is None:
            self._dataset = _open_dataset(self, scratch)
        return self._dataset


def text_chunks(path: Path, errors: str, md5: str | None = None) -> Iterator[str]:
    """The text of ``path`` in pieces of about ``CHUNK_BYTES``, as ``bytes.decode`` reads it.

    A byte that is not UTF-8 raises a ``ValueError`` naming the file and its offset, unless
    ``errors="replace"`` (``data.errors=replace``) turns it into U+FFFD. With ``md5``, a file whose
    bytes no longer have it (changed since it was checksummed) raises ``RuntimeError`` at its end.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    digest = hashlib.md5()
    offset = 0  # bytes of the file before the current block
    with path.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
            pending = len(decoder.getstate()[0])  # an incomplete character from the last block
            try:
                yield decoder.decode(block)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise ValueError(
                    f"{path} is not UTF-8 text: the byte at offset {at:,} is not UTF-8 (a binary "
                    "file?). Convert the file to UTF-8, leave it out of data.source, or pass "
                    "data.errors=replace to read such bytes as U+FFFD"
                ) from None
            offset += len(block)
    try:
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(
            f"{path} is not UTF-8 text: it ends in the middle of a character, at byte {offset:,}. "
            "Convert the file to UTF-8, or pass data.errors=replace"
        ) from None
    if md5 is not None and digest.hexdigest() != md5:
        raise RuntimeError(f"{path} changed while it was being prepared; run again once it is final")


def download(url: str, dest: Path, md5: str | None, timeout: float = 30.0) -> None:
    """Download ``url`` to ``dest`` and check its md5; ``dest`` appears only if both succeed."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise FileNotFoundError(
            f"no text at {dest} and no network to download it from {url} ({err}). "
            f"Put input.txt at {dest}, or pass data.path=/path/to/input.txt"
        ) from err
    got = hashlib.md5(data).hexdigest()
    if md5 is not None and got != md5:
        raise ValueError(
            f"the file downloaded from {url} has md5 {got}, expected {md5}; nothing was saved. "
            f"Download it by hand to {dest}, or pass data.path=/path/to/input.txt"
        )
    write_atomically(dest, data)


def text_file(
    data_dir: Path, path: str | os.PathLike | None, url: str | None, md5: str | None, errors: str, fetch: bool
) -> Source:
    """``data.path``: that file, or ``data_dir/input.txt``, downloaded from ``url`` when ``fetch``."""
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(
                f"no text file at {file} (from data.path); point data.path=/path/to/input.txt at an "
                f"existing file, or leave data.path unset to use {data_dir / 'input.txt'}"
            )
    else:
        file = data_dir / "input.txt"
        if not file.is_file():
            if url is None or not fetch:
                raise FileNotFoundError(
                    f"no text at {file}; put input.txt there or pass data.path=/path/to/input.txt"
                )
            download(url, file, md5)
    return Source(f"the text file {file}", "text", files=[file], errors=errors)


def _expand(pattern: str, follow_symlinks: bool) -> list[Path]:
    """The files a path, folder or glob names, sorted; a folder gives its text files, recursively.

    A file named by itself is read wherever it links to. A folder's or a glob's files must lie in
    that folder (the glob's part before its first wildcard), unless ``follow_symlinks``: a link out
    of it is refused, so a corpus never takes in a file its owner did not mean to (``/etc/passwd``
    into a vocabulary). Refused, not skipped: the files read never depend on the option, so neither
    does the checksum that names the prepared folder.
    """
    path = Path(pattern).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        root, found = path, _walk(path, follow_symlinks)
        files = [p for p in found if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES]
        if not files:  # a folder of JSON-lines, CSV or Parquet files
            files = [p for p in found if p.is_file() and p.suffix.lower() in BUILDERS]
    else:
        root = Path(*next((path.parts[:i] for i, part in enumerate(path.parts) if glob.has_magic(part)), "."))
        found = files = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    if not follow_symlinks:
        inside = root.resolve()
        if outside := [p for p in found if not p.resolve().is_relative_to(inside)]:
            more = f" (and {len(outside) - 1} more)" if len(outside) > 1 else ""
            raise ValueError(
                f"data.source={pattern} holds {outside[0]}, a link to {outside[0].resolve()} outside "
                f"{root}{more}; links out of a source are not followed. Remove the link, or pass "
                "data.follow_symlinks=true to read what it links to"
            )
    return sorted(files)


def _walk(folder: Path, follow_symlinks: bool) -> list[Path]:
    """Every file in ``folder``, recursively, and its links to folders; with ``follow_symlinks``,
    through those links too (each real folder once, so a link to an ancestor ends)."""
    found, seen = [], set()
    for top, dirs, names in os.walk(folder, followlinks=follow_symlinks):
        if (real := os.path.realpath(top)) in seen:
            dirs.clear()
            continue
        seen.add(real)
        found += [Path(top, name) for name in names]
        found += [Path(top, name) for name in dirs if os.path.islink(os.path.join(top, name))]
    return found


def resolve_source(source: str, text_column: str, split: str, errors: str, follow_symlinks: bool) -> Source:
    """What ``data.source`` names (see the module docstring); reads nothing but folder listings."""
    source = str(source)
    if source.startswith(HF_PREFIX):
        name = source[len(HF_PREFIX) :]
        folder = Path(name).expanduser()
        if folder.is_dir():
            return Source(
                f"the saved dataset {folder}, split {split}, column {text_column}",
                "saved",
                location=str(folder),
                split=split,
                text_column=text_column,
            )
        dataset, _, config = name.partition(":")
        return Source(
            f"the Hugging Face dataset {name}, split {split}, column {text_column}",
            "hub",
            location=dataset,
            config=config or None,
            split=split,
            text_column=text_column,
        )
    files = _expand(source, follow_symlinks)
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
    if kind == "text":
        return Source(f"{len(files)} text file(s) from {source}", "text", files=files, errors=errors)
    return Source(
        f"{len(files)} {kind} file(s) from {source}, column {text_column}",
        kind,
        files=files,
        text_column=text_column,
    )


def _open_dataset(source: Source, scratch: Path | None) -> Any:
    import datasets

    if source.kind in BUILDERS.values():
        files = [str(p) for p in source.files]
        cache = str(scratch) if scratch is not None else None
        ds = datasets.load_dataset(source.kind, data_files=files, split="train", cache_dir=cache)
    elif source.kind == "saved":
        try:
            ds = datasets.load_from_disk(source.location)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{source.location} is not a dataset written by save_to_disk ({err}); pass "
                "data.source=hf:<folder of Dataset.save_to_disk>, or data.source=<folder> for text files"
            ) from None
        if isinstance(ds, datasets.DatasetDict):
            if source.split not in ds:
                raise ValueError(
                    f"the saved dataset {source.location} has no split {source.split!r}; pass one of "
                    + ", ".join(f"data.split={s}" for s in ds)
                )
            ds = ds[source.split]
    else:
        try:
            ds = datasets.load_dataset(source.location, source.config, split=source.split)
        except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:
            raise FileNotFoundError(
                f"could not load the Hugging Face dataset {source.location!r} (config {source.config}, "
                f"split {source.split}): {type(err).__name__}: {err}. With no network, save it once where "
                "there is one (datasets.load_dataset(...).save_to_disk('folder')) and pass "
                "data.source=hf:folder"
            ) from None
    if source.text_column not in ds.column_names:
        raise ValueError(
            f"{source.description} has no column {source.text_column!r}; its columns are "
            + ", ".join(ds.column_names)
            + f". Pass data.text_column=<one of them> (e.g. data.text_column={ds.column_names[0]})"
        )
    return ds


def _record_batches(dataset: Any) -> Iterator[Any]:
    """The dataset's Arrow record batches, read from its files in order.

    Read, not memory-mapped: touching every page of a mapped file would put the whole corpus in
    this process's resident memory (as page cache, but counted all the same).
    """
    import pyarrow as pa

    # load_dataset and load_from_disk give file-backed datasets without an indices mapping
    assert dataset.cache_files, "a dataset held in memory"
    for cache in dataset.cache_files:
        with pa.OSFile(cache["filename"]) as f:
            yield from pa.ipc.open_stream(f)
