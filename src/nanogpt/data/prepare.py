"""Turn one text file into token memmaps, once per text and tokenizer.

``data_dir`` holds one prepared folder per (tokenizer, text, val fraction), named by them::

    input.txt                        the default text (downloaded here when ``url`` is set and no
                                     ``path`` is given)
    char-6fb458f12320-val0.1-v2/     <tokenizer>-<md5 of the text, 12 hex>-val<fraction>-v<format>
    ├── train.bin                    token ids of the first 90% of the characters, a flat uint16 array
    ├── val.bin                      ... of the last 10% (uint32 when the vocabulary outgrows uint16)
    └── meta.json                    tokenizer, dtype, split sizes and the text's full md5
    .preparing-<name>.<random>.pid<pid>.<host>/   a preparation under way (or killed)

A prepared folder is immutable: it is built under a temporary name and renamed into place whole,
so two texts never share one, a run never sees another preparation's files, and of two processes
preparing the same text the second to finish discards its own copy. A folder left by a killed
preparation keeps its temporary name, so it is never used, and the next preparation deletes it
once its owner is dead. Before a folder is used, its token files are checked against meta.json.

Preparation streams: the text is read in chunks, and tokens are appended chunk by chunk, so memory
stays flat however large the text.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nanogpt.data.tokenizer import build_tokenizer, check_tokenizer_name
from nanogpt.files import pid_alive, write_atomically

FORMAT_VERSION = 2  # 2: one folder per text, named by its md5; uint32 tokens when uint16 is too small
CHUNK_BYTES = 1 << 20  # how much text is read, decoded and encoded at a time
UNCUT_LIMIT = 4 << 20  # characters of text held at most while waiting for a clean BPE cut
_PREPARING = re.compile(r"^\.preparing-.+\.pid(\d+)\.(.+)$")


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


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
    if md5 is not None and _md5(data) != md5:
        raise ValueError(
            f"the file downloaded from {url} has md5 {_md5(data)}, expected {md5}; nothing was saved. "
            f"Download it by hand to {dest}, or pass data.path=/path/to/input.txt"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(dest, data)


def _source(data_dir: Path, path: str | os.PathLike | None, url: str | None, md5: str | None) -> Path:
    """The text to prepare; downloads ``data_dir/input.txt`` when it is the text and ``url`` is set."""
    if path is not None:
        source = Path(path).expanduser()
        if not source.is_file():
            raise FileNotFoundError(
                f"no text file at {source} (from data.path); point data.path=/path/to/input.txt at an "
                f"existing file, or leave data.path unset to use {data_dir / 'input.txt'}"
            )
        return source
    source = data_dir / "input.txt"
    if source.is_file():
        return source
    if url is None:
        raise FileNotFoundError(
            f"no text at {source}; put input.txt there or pass data.path=/path/to/input.txt"
        )
    download(url, source, md5)
    return source


def text_chunks(
    source: Path, digest: hashlib._Hash | None = None, errors: str = "strict", size: int | None = None
) -> Iterator[str]:
    """The text of ``source`` in pieces of about ``size`` bytes (``CHUNK_BYTES``), as ``bytes.decode``
    reads it (no newline translation); feeds the raw bytes to ``digest`` on the way.

    A byte that is not UTF-8 raises a ``ValueError`` naming the file and its offset, unless
    ``errors="replace"`` (``data.errors=replace``) turns it into U+FFFD.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    offset = 0  # bytes of the file before the current block
    with source.open("rb") as f:
        while block := f.read(size or CHUNK_BYTES):
            if digest is not None:
                digest.update(block)
            pending = len(decoder.getstate()[0])  # an incomplete character from the last block
            try:
                yield decoder.decode(block)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise ValueError(
                    f"{source} is not UTF-8 text: the byte at offset {at:,} is not UTF-8 (a binary "
                    "file?). Convert the file to UTF-8, leave it out of "
                    "data.source, or pass data.errors=replace to read such bytes as U+FFFD"
                ) from None
            offset += len(block)
    try:
        yield decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise ValueError(
            f"{source} is not UTF-8 text: it ends in the middle of a character, at byte {offset:,}. "
            "Convert the file to UTF-8, or pass data.errors=replace"
        ) from None


def file_md5(source: Path) -> str:
    digest = hashlib.md5()
    with source.open("rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def corpus_name(tokenizer: str, source_md5: str, val_fraction: float) -> str:
    """The prepared folder's name: what decides its contents, readable at a glance."""
    return f"{tokenizer}-{source_md5[:12]}-val{float(val_fraction)!r}-v{FORMAT_VERSION}"


def check_options(tokenizer: str, val_fraction: float) -> None:
    check_tokenizer_name(tokenizer)  # also keeps the folder name a plain name
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")


def _mismatch(folder: Path, meta: dict) -> str | None:
    """What is wrong with a prepared folder's token files by its ``meta.json``, if anything."""
    if meta["format_version"] != FORMAT_VERSION:
        return f"format {meta['format_version']}; this nanogpt reads format {FORMAT_VERSION}"
    if meta["dtype"] not in ("uint16", "uint32"):
        return f"meta.json names the token dtype {meta['dtype']!r}"
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        size, n = (folder / f"{split}.bin").stat().st_size, meta[f"{split}_tokens"]
        if size != n * itemsize:
            return (
                f"{split}.bin holds {size:,} bytes, but meta.json counts {n:,} {meta['dtype']} tokens "
                f"= {n * itemsize:,} bytes"
            )
    return None


def read_meta(corpus_dir: str | os.PathLike) -> dict:
    """A prepared folder's ``meta.json`` plus ``corpus_dir`` (where it lives), once its token files
    are checked against it; a damaged folder raises ``ValueError`` naming the folder to delete."""
    folder = Path(corpus_dir)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        problem = _mismatch(folder, meta)
    except (OSError, ValueError, KeyError, TypeError) as err:  # missing files, bad JSON, missing keys
        problem = f"{type(err).__name__}: {err}"
    if problem is not None:
        raise ValueError(
            f"the prepared corpus {folder} is damaged ({problem}); delete the folder {folder} "
            "and run again to prepare it afresh"
        )
    return {**meta, "corpus_dir": str(folder)}


def checked_meta(folder: Path, source_md5: str) -> dict:
    meta = read_meta(folder)
    if meta["source_md5"] != source_md5:  # two texts whose md5s share the 12 hex digits of the name
        raise ValueError(
            f"{folder} holds another text (md5 {meta['source_md5']}, not {source_md5}); "
            f"delete the folder {folder} and run again"
        )
    return meta


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


def find_corpus(
    data_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
) -> dict:
    """The metadata of an already prepared text, found by its checksum; builds and downloads nothing.

    For processes that must use the folder another one prepared (DDP ranks other than local rank 0).
    """
    check_options(tokenizer, val_fraction)
    data_dir = Path(data_dir)
    source = Path(path).expanduser() if path is not None else data_dir / "input.txt"
    if not source.is_file():
        raise FileNotFoundError(f"no text at {source}; call prepare_data() (or prepare_corpus) first")
    source_md5 = file_md5(source)
    folder = data_dir / corpus_name(tokenizer, source_md5, val_fraction)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{source} is not prepared: no folder {folder}. Call prepare_data() first; under DDP local "
            "rank 0 prepares it, so every rank on a machine must see the same data.data_dir"
        )
    return checked_meta(folder, source_md5)


def prepare_corpus(
    data_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    url: str | None = None,
    md5: str | None = None,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
) -> dict:
    """Make sure ``data_dir`` holds the prepared folder of the text; return its checked metadata.

    The text is ``path`` when given, else ``data_dir/input.txt``, downloaded from ``url`` (and
    checked against ``md5``) when missing. ``meta["corpus_dir"]`` is the prepared folder; it is
    built only when missing, and safe to build from several processes at once.
    """
    check_options(tokenizer, val_fraction)
    data_dir = Path(data_dir)
    source = _source(data_dir, path, url, md5)
    source_md5 = file_md5(source)
    folder = data_dir / corpus_name(tokenizer, source_md5, val_fraction)
    remove_dead_preparations(data_dir)
    if not folder.is_dir():
        _build(source, source_md5, folder, tokenizer, val_fraction)
    return checked_meta(folder, source_md5)


def _scan(source: Path, vocabulary: bool) -> tuple[int, set[str]]:
    """The text's length in characters and, with ``vocabulary``, its distinct characters."""
    n, chars, blank = 0, set(), True
    for chunk in text_chunks(source):
        n += len(chunk)
        blank = blank and (chunk.isspace() or not chunk)
        if vocabulary:
            chars.update(chunk)
    if blank:
        raise ValueError(f"the text file {source} is empty; fill it or pass data.path=/path/to/input.txt")
    return n, chars


def bpe_cut(text: str) -> int:
    """The last index ``i`` at which GPT-2's BPE of ``text[:i]`` plus that of ``text[i:]`` is the BPE
    of ``text``; 0 when there is none.

    GPT-2's pre-tokenizer regex never joins a newline to a neighbouring non-space (its word, number
    and punctuation pieces exclude whitespace and take at most a leading ' '), and a newline alone
    between two non-spaces is its own piece whether or not text follows it. So a cut right after
    such a newline starts a fresh piece on both sides. (Any other newline may belong to a longer
    whitespace piece, whose split the regex's ``\\s+(?!\\S)`` decides by looking past the cut.)

    A text with no such newline in ``UNCUT_LIMIT`` characters (CRLF line ends, one endless line) is
    cut at its last newline, or at its end: holding it whole would cost memory in proportion to the
    file, where the cut may change a token or two.
    """
    i = len(text) - 1
    while (i := text.rfind("\n", 1, i)) > 0:
        if not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
    if len(text) > UNCUT_LIMIT:
        return text.rfind("\n") + 1 or len(text)
    return 0


def _pieces(chunks: Iterable[str], n_train: int, cut: Callable[[str], int]) -> Iterator[tuple[int, str]]:
    """``(split, text)``: split 0 covers the first ``n_train`` characters, 1 the rest, each in pieces
    cut only where ``cut`` allows, so encoding them one by one encodes each split whole."""
    buf, split, left = "", 0, n_train  # left: characters of split 0 not yet in a piece
    for chunk in chunks:
        buf += chunk
        if split == 0 and len(buf) >= left:
            yield 0, buf[:left]
            buf, split = buf[left:], 1
        if i := cut(buf):
            yield split, buf[:i]
            buf, left = buf[i:], left - i
    yield split, buf
    if split == 0:
        yield 1, ""


def _build(source: Path, source_md5: str, folder: Path, kind: str, val_fraction: float) -> None:
    n_chars, chars = _scan(source, vocabulary=kind == "char")
    tok = build_tokenizer(kind, chars)
    dtype = token_dtype(tok.vocab_size)
    # Split the text, not the tokens, so char and BPE runs see the same held-out passage.
    n_train = int(n_chars * (1.0 - val_fraction))
    cut = len if kind == "char" else bpe_cut  # BPE pieces never straddle a cut
    with publishing(folder) as tmp:
        counts, digest = [0, 0], hashlib.md5()
        with open(tmp / "train.bin", "wb") as train, open(tmp / "val.bin", "wb") as val:
            for split, text in _pieces(text_chunks(source, digest), n_train, cut):
                ids = np.asarray(tok.encode(text), dtype=dtype)
                (train, val)[split].write(ids.tobytes())
                counts[split] += ids.size
        if digest.hexdigest() != source_md5:
            raise RuntimeError(f"{source} changed while it was being prepared; run again once it is final")
        meta = {
            "format_version": FORMAT_VERSION,
            "source_md5": source_md5,
            "val_fraction": float(val_fraction),
            "source": str(source),
            "source_chars": n_chars,
            "train_tokens": counts[0],
            "val_tokens": counts[1],
            # characters per token, for bits-per-character from a per-token loss
            "train_chars": n_train,
            "val_chars": n_chars - n_train,
            "dtype": dtype.name,
            "tokenizer": tok.meta(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # the rename publishes it


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
            shutil.rmtree(tmp)  # another process prepared the same text first; use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
