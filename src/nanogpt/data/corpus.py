"""The prepared-folder format: one folder of token files per corpus, tokenizer and val fraction.

``data_dir`` holds them side by side, each named by what decides its contents::

    char-6fb458f12320-val0.1-v4/     <tokenizer>-<checksum of the corpus, 12 hex>-val<fraction>-v<format>
    ├── train.bin                    token ids of the corpus' first characters, a flat uint16 array
    ├── val.bin                      ... of its last ``val_fraction`` (uint32 when the vocabulary
    │                                outgrows uint16)
    └── meta.json                    :class:`CorpusMeta`: tokenizer, dtype, split sizes, the checksum,
                                     and a digest of these fields
    .preparing-<name>.<random>.pid<pid>.<host>/   a preparation under way (or killed)

A prepared folder is immutable: :func:`publishing` builds it under a temporary name and renames it
into place whole, so two corpora never share one, a run never sees another preparation's files, and
of two processes preparing the same corpus the second to finish discards its own copy. A folder
left by a killed preparation keeps its temporary name, so it is never used, and
:func:`remove_dead_preparations` deletes it once its owner is dead.

:meth:`Corpus.read` checks a folder before it is used: ``meta.json`` against its own digest (an
edited vocabulary would train, and go into the checkpoint, as the wrong mapping), the token files'
sizes against it, and every token id against the vocabulary (an id beyond it would crash the
embedding mid-run, or index past it on a GPU). The last reads the token files once per process
that opens the folder: a sequential read at disk speed, some seconds for GPT-2's 9B-token
OpenWebText (18 GB), against hours of training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanogpt.data.tokenizer import Tokenizer, tokenizer_from_meta
from nanogpt.files import pid_alive

# 3: documents are separated (not ended) by the separator, and val_fraction counts characters for
# every kind of input; meta.json is CorpusMeta, read strictly
# 4: meta.json carries the digest of its fields
FORMAT_VERSION = 4
SPLITS = ("train", "val")
CHECK_TOKENS = 1 << 20  # token ids read at a time to check them against the vocabulary
_PREPARING = re.compile(r"^\.preparing-.+\.pid(\d+)\.(.+)$")


def folder_name(tokenizer: str, checksum: str, val_fraction: float) -> str:
    """The prepared folder's name: what decides its contents, readable at a glance."""
    return f"{tokenizer}-{checksum[:12]}-val{float(val_fraction)!r}-v{FORMAT_VERSION}"


def find_prepared(
    data_dir: str | os.PathLike, tokenizer: str, checksum: str, val_fraction: float
) -> Corpus | None:
    """The corpus with this checksum prepared in ``data_dir`` for ``tokenizer`` and ``val_fraction``,
    checked; None while there is none."""
    folder = Path(data_dir) / folder_name(tokenizer, checksum, val_fraction)
    return Corpus.read(folder, checksum) if folder.is_dir() else None


class DamagedCorpus(ValueError):
    """A prepared folder whose files do not agree; the message names the folder to delete."""

    def __init__(self, folder: Path, problem: str) -> None:
        super().__init__(
            f"the prepared corpus {folder} is damaged ({problem}); delete the folder {folder} "
            "and run again to prepare it afresh"
        )


@dataclass(frozen=True)
class CorpusMeta:
    """``meta.json``: what a prepared folder holds. Written once, by the preparation that builds it."""

    format_version: int
    checksum: str  # hex digest of everything that decides the tokens (see nanogpt.data.sources)
    source: str  # what was prepared, in words
    tokenizer: dict  # Tokenizer.meta(): enough to rebuild it
    dtype: str  # of the token files: uint16, or uint32 for a vocabulary beyond 65,536
    val_fraction: float
    documents: int  # documents with text, separated by the tokenizer's separator
    train_chars: int  # characters of the corpus text (documents joined by the separator) per split,
    val_chars: int  # for bits per character from a per-token loss
    train_tokens: int
    val_tokens: int

    def write(self, folder: Path) -> None:
        fields = dataclasses.asdict(self)
        (folder / "meta.json").write_text(json.dumps({**fields, "digest": _digest(fields)}, indent=1))

    @classmethod
    def read(cls, folder: Path) -> CorpusMeta:
        """The folder's ``meta.json``, exactly as :meth:`write` writes it; anything else is damage."""
        try:
            fields = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as err:  # missing, or not JSON (cut short)
            raise DamagedCorpus(folder, f"{type(err).__name__}: {err}") from None
        if not isinstance(fields, dict):
            raise DamagedCorpus(folder, "meta.json does not hold an object")
        digest = fields.pop("digest", None)
        types = typing.get_type_hints(cls)
        if missing := types.keys() - fields.keys():
            raise DamagedCorpus(folder, f"meta.json lacks {', '.join(sorted(missing))}")
        if unknown := fields.keys() - types.keys():
            raise DamagedCorpus(folder, f"meta.json has unknown keys {', '.join(sorted(unknown))}")
        for name, kind in types.items():
            value = fields[name]
            # bool is an int to isinstance, and JSON writes 1.0 as 1.0, so both checks are exact
            if type(value) is bool or not isinstance(value, kind):
                raise DamagedCorpus(folder, f"meta.json's {name} is {value!r}; expected {kind.__name__}")
        if digest is None:
            raise DamagedCorpus(folder, "meta.json lacks digest")
        if digest != _digest(fields):
            raise DamagedCorpus(
                folder, "meta.json does not match its digest: it was changed after preparation"
            )
        return cls(**fields)


def _digest(fields: dict) -> str:
    """The md5 of ``meta.json``'s fields, however the file is indented."""
    return hashlib.md5(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Corpus:
    """A prepared folder, checked: where it is, and its :class:`CorpusMeta`.

    A plain class, not a dataclass: Hydra's ``instantiate(cfg.data, corpus=corpus)`` would turn a
    dataclass into a config node instead of passing it on.
    """

    def __init__(self, folder: Path, meta: CorpusMeta) -> None:
        self.folder = folder
        self.meta = meta

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Corpus) and (self.folder, self.meta) == (other.folder, other.meta)

    def __repr__(self) -> str:
        return f"Corpus({str(self.folder)!r})"

    @classmethod
    def read(cls, folder: str | os.PathLike, checksum: str | None = None) -> Corpus:
        """The prepared corpus in ``folder``, once its token files are checked against ``meta.json``.

        ``checksum``, when given, must be the corpus' own (two corpora can share the name's 12 hex).
        A damaged folder raises ``ValueError`` naming the folder to delete.
        """
        folder = Path(folder)
        meta = CorpusMeta.read(folder)
        if problem := _mismatch(folder, meta) or _token_beyond_vocabulary(folder, meta):
            raise DamagedCorpus(folder, problem)
        if checksum is not None and meta.checksum != checksum:
            raise ValueError(
                f"{folder} holds another corpus (checksum {meta.checksum}, not {checksum}); "
                f"delete the folder {folder} and run again"
            )
        return cls(folder, meta)

    @property
    def vocab_size(self) -> int:
        return self.meta.tokenizer["vocab_size"]

    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_meta(self.meta.tokenizer)

    def path(self, split: str) -> Path:
        """``train.bin`` or ``val.bin``."""
        return self.folder / f"{split}.bin"

    def tokens(self, split: str = "val") -> np.ndarray:
        """A split's token ids, memory-mapped."""
        return np.memmap(self.path(split), dtype=self.meta.dtype, mode="r")

    def num_tokens(self, split: str) -> int:
        return getattr(self.meta, f"{split}_tokens")


def _mismatch(folder: Path, meta: CorpusMeta) -> str | None:
    """What is wrong with a prepared folder's token files by its ``meta.json``, if anything."""
    if meta.format_version != FORMAT_VERSION:
        return f"format {meta.format_version}; this nanogpt reads format {FORMAT_VERSION}"
    if meta.dtype not in ("uint16", "uint32"):
        return f"meta.json names the token dtype {meta.dtype!r}"
    itemsize = np.dtype(meta.dtype).itemsize
    for split in SPLITS:
        try:
            size = (folder / f"{split}.bin").stat().st_size
        except OSError as err:
            return f"{type(err).__name__}: {err}"
        n = getattr(meta, f"{split}_tokens")
        if size != n * itemsize:
            return (
                f"{split}.bin holds {size:,} bytes, but meta.json counts {n:,} {meta.dtype} tokens "
                f"= {n * itemsize:,} bytes"
            )
    return None


def _token_beyond_vocabulary(folder: Path, meta: CorpusMeta) -> str | None:
    """The first token id of a prepared folder that the vocabulary lacks, if any, in words.

    Read a block at a time, not memory-mapped: touching every page of a mapping would count the
    whole corpus in this process's resident memory.
    """
    vocab_size = meta.tokenizer.get("vocab_size")
    if type(vocab_size) is not int:
        return f"meta.json's tokenizer has the vocab_size {vocab_size!r}"
    for split in SPLITS:
        start = 0
        with open(folder / f"{split}.bin", "rb") as f:
            while (ids := np.fromfile(f, dtype=meta.dtype, count=CHECK_TOKENS)).size:
                if ids.max() >= vocab_size:
                    at = int(np.argmax(ids >= vocab_size))
                    return (
                        f"{split}.bin holds the token id {ids[at]} at token {start + at:,}, beyond the "
                        f"vocabulary of {vocab_size:,} tokens in meta.json"
                    )
                start += ids.size
    return None


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 token files while the vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


@contextmanager
def publishing(folder: Path) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to build it in, renamed to ``folder`` when the block ends.

    A failure removes it. When another process published ``folder`` first, this copy is discarded
    and theirs is used. A kill leaves the temporary folder, named for its owner's pid and host, for
    :func:`remove_dead_preparations`.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    owner = f"pid{os.getpid()}.{socket.gethostname()}"
    tmp = folder.parent / f".preparing-{folder.name}.{secrets.token_hex(4)}.{owner}"
    tmp.mkdir()  # not mkdtemp: its 0700 would make the renamed folder private to this user
    try:
        yield tmp
        try:
            os.rename(tmp, folder)  # atomic, and fails when the folder exists (and is not empty)
        except OSError:
            if not folder.is_dir():
                raise
            shutil.rmtree(tmp)  # another process prepared the same corpus first; use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_dead_preparations(data_dir: str | os.PathLike) -> list[Path]:
    """Delete the ``.preparing-*`` folders of killed preparations on this host; return them.

    Those of live processes, and of other hosts sharing the disk, are left alone.
    """
    removed, host = [], socket.gethostname()
    for path in Path(data_dir).glob(".preparing-*"):
        match = _PREPARING.match(path.name)
        if match and match[2] == host and not pid_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
