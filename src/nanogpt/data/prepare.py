"""A corpus, prepared once: :func:`prepare_corpus` builds its token folder, :func:`find_corpus` finds it.

The flow, for every kind of input::

    CorpusConfig (the data group's corpus options)
      -> sources.Source (a text file or its download, files and globs, datasets' builders, a saved
         dataset, the Hub): documents, and a checksum of them
      -> corpus.find_prepared: data_dir/<tokenizer>-<checksum>-val<fraction>-v<format>/, if it exists
      -> else encode.write_tokens into a temporary folder that corpus.publishing renames into place
      -> corpus.Corpus: the checked folder and its meta.json

Checksumming reads a local corpus whole, so it happens once per call (:meth:`Source.checksum`);
a :class:`~nanogpt.data.datamodule.TextDataModule` keeps the :class:`Corpus` it got, so it never
checksums twice. Under DDP, local rank 0 prepares and the other ranks :func:`find_corpus`, optionally
waiting for rank 0 to publish the folder.
"""

from __future__ import annotations

import errno
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from nanogpt.data.corpus import (
    FORMAT_VERSION,
    Corpus,
    CorpusMeta,
    find_prepared,
    folder_name,
    publishing,
    remove_dead_preparations,
)
from nanogpt.data.encode import write_tokens
from nanogpt.data.sources import Source, resolve_source, text_file
from nanogpt.data.tokenizer import check_tokenizer_name
from nanogpt.files import disk_full, readable_size

POLL_S = 1.0  # how often a waiting find_corpus() looks for the folder


@dataclass(frozen=True)
class CorpusConfig:
    """The options of a ``data`` config group that decide its corpus (its defaults are the YAML's,
    ``configs/data/text.yaml``); validated on creation.

    ``source``, when set, names the corpus; else ``path``, a text file, else ``data_dir/input.txt``
    (downloaded from ``url`` and checked against ``md5`` when missing). See :mod:`nanogpt.data.sources`.
    """

    data_dir: Path
    path: str | None
    url: str | None
    md5: str | None
    source: str | None
    text_column: str
    split: str
    errors: str
    follow_symlinks: bool
    num_proc: int | None
    tokenizer: str
    val_fraction: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        check_tokenizer_name(self.tokenizer)  # also keeps the folder name a plain name
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.errors not in ("strict", "replace"):
            raise ValueError(f"data.errors must be strict or replace, got {self.errors!r}")
        if type(self.follow_symlinks) is not bool:
            raise ValueError(f"data.follow_symlinks must be true or false, got {self.follow_symlinks!r}")
        if self.num_proc is not None and (type(self.num_proc) is not int or self.num_proc < 1):
            raise ValueError(
                f"data.num_proc must be a positive integer, or null for one per core; got {self.num_proc}"
            )

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> CorpusConfig:
        """The corpus options of a ``data`` group (``cfg.data``, or the options a DataModule was not
        given by name); reads no other key, so ``data.block_size`` need not be known yet. A corpus
        option missing from ``data`` is named, with the file that holds the defaults."""
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(
                f"the data config lacks {', '.join(f'data.{name}' for name in missing)}; a data group "
                "extends configs/data/text.yaml, which holds every option's default (defaults: [text])"
            )
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    def resolve(self, fetch: bool) -> Source:
        """The source; with ``fetch``, a missing ``input.txt`` is downloaded from ``url``."""
        if self.source is not None:
            return resolve_source(
                self.source, self.text_column, self.split, self.errors, self.follow_symlinks
            )
        return text_file(self.data_dir, self.path, self.url, self.md5, self.errors, fetch)


def prepare_corpus(config: CorpusConfig) -> Corpus:
    """The prepared corpus of ``config``: found in ``config.data_dir``, or built there.

    Safe to call from several processes at once; the folder is built only when missing.
    """
    source = config.resolve(fetch=True)
    checksum = source.checksum()
    remove_dead_preparations(config.data_dir)
    found = find_prepared(config.data_dir, config.tokenizer, checksum, config.val_fraction)
    if found is not None:
        return found
    folder = config.data_dir / folder_name(config.tokenizer, checksum, config.val_fraction)
    try:
        _build(folder, source, checksum, config)
    except Exception as err:
        if (full := disk_full(err)) is None:
            raise
        free = shutil.disk_usage(config.data_dir).free
        writing = f" (writing {full.filename})" if full.filename else ""
        raise OSError(
            errno.ENOSPC,
            f"disk full: preparing {source.description} into {folder}{writing} ran out of space, and "
            f"{readable_size(free)} is free there now; nothing was kept. Free some space, or point "
            "data.data_dir at a disk with room",
        ) from err
    return Corpus.read(folder, checksum)


def _build(folder: Path, source: Source, checksum: str, config: CorpusConfig) -> None:
    """Tokenize ``source`` into ``folder``, published whole (or, on any failure, not at all)."""
    with publishing(folder) as tmp:
        scratch = tmp / "scratch"  # datasets' builders write Arrow files here, deleted before the rename
        written = write_tokens(
            lambda: source.documents(scratch),
            config.tokenizer,
            config.val_fraction,
            tmp,
            config.num_proc,
            source.description,
        )
        shutil.rmtree(scratch, ignore_errors=True)
        meta = CorpusMeta(
            format_version=FORMAT_VERSION,
            checksum=checksum,
            source=source.description,
            tokenizer=written.tokenizer.meta(),
            dtype=written.dtype,
            val_fraction=float(config.val_fraction),
            documents=written.documents,
            train_chars=written.train_chars,
            val_chars=written.val_chars,
            train_tokens=written.train_tokens,
            val_tokens=written.val_tokens,
        )
        meta.write(tmp)  # the rename publishes it


def find_corpus(config: CorpusConfig, wait_s: float = 0.0) -> Corpus:
    """The corpus another process prepared (DDP's local rank 0); never builds or downloads.

    Waits up to ``wait_s`` seconds for it (and for a downloaded ``input.txt``) to appear, then
    raises ``FileNotFoundError`` naming ``data.data_dir``.
    """
    deadline = time.monotonic() + wait_s
    checksum, missing = None, None
    while True:
        if checksum is None:
            try:
                source = config.resolve(fetch=False)
                checksum = source.checksum()
            except FileNotFoundError as err:  # input.txt, before rank 0 downloaded it
                missing = err
        if checksum is not None:
            found = find_prepared(config.data_dir, config.tokenizer, checksum, config.val_fraction)
            if found is not None:
                return found
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(POLL_S, left))
    if checksum is None and not wait_s:
        raise missing
    what = source.description if checksum is not None else f"the corpus ({missing})"
    waited = f" after waiting {wait_s:g} s for it" if wait_s else ""
    folder = folder_name(config.tokenizer, checksum or "?" * 12, config.val_fraction)
    raise FileNotFoundError(
        f"{what} is not prepared in data.data_dir={config.data_dir} (no folder {folder}){waited}. "
        "Prepare it first (prepare_data(), or nanogpt.data.prepare_corpus); under DDP local rank 0 prepares "
        "it, so every rank on a machine must see the same data.data_dir"
    )
