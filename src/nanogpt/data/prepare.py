"""Turn one text file into token memmaps, once.

Everything for a corpus lives in one folder (``data_dir``)::

    input.txt    the raw text (downloaded here when ``url`` is set and no ``path`` is given)
    train.bin    token ids of the first 90%, a flat little-endian uint16 array
    val.bin      token ids of the last 10%
    meta.json    tokenizer, split sizes and the source's checksum

``meta.json`` is written last and names the source's md5, so a folder is either complete and
current or prepared again; an interrupted run never leaves files that look finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from nanogpt.data.tokenizer import build_tokenizer
from nanogpt.files import write_atomically

FORMAT_VERSION = 1
TOKEN_DTYPE = np.uint16  # holds both the char vocab and GPT-2's 50257 tokens


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


def _resolve_source(data_dir: Path, path: str | os.PathLike | None, url: str | None, md5: str | None) -> Path:
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


def read_meta(data_dir: str | os.PathLike) -> dict | None:
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.is_file():
        return None
    return json.loads(meta_path.read_text())


def prepare_corpus(
    data_dir: str | os.PathLike,
    path: str | os.PathLike | None = None,
    url: str | None = None,
    md5: str | None = None,
    tokenizer: str = "char",
    val_fraction: float = 0.1,
) -> dict:
    """Make sure ``data_dir`` holds current token files for the text; return its metadata.

    The text is ``path`` when given, else ``data_dir/input.txt``, downloaded from ``url`` (and
    checked against ``md5``) when missing. Work is skipped when the folder is already current.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    data_dir = Path(data_dir)
    source = _resolve_source(data_dir, path, url, md5)
    raw = source.read_bytes()
    if not raw.strip():
        raise ValueError(f"the text file {source} is empty; fill it or pass data.path=/path/to/input.txt")
    source_md5 = _md5(raw)

    meta = read_meta(data_dir)
    wanted = {"format_version": FORMAT_VERSION, "source_md5": source_md5, "val_fraction": val_fraction}
    if (
        meta is not None
        and all(meta.get(k) == v for k, v in wanted.items())
        and meta["tokenizer"]["kind"] == tokenizer
        and (data_dir / "train.bin").is_file()
        and (data_dir / "val.bin").is_file()
    ):
        return meta

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source} is not UTF-8 text ({err}); convert it to UTF-8") from err
    tok = build_tokenizer(tokenizer, text)
    n = len(text)
    split = int(n * (1.0 - val_fraction))
    # Split the text, not the tokens, so char and BPE runs see the same held-out passage.
    train_ids = np.array(tok.encode(text[:split]), dtype=TOKEN_DTYPE)
    val_ids = np.array(tok.encode(text[split:]), dtype=TOKEN_DTYPE)

    data_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(data_dir / "train.bin", train_ids.tobytes())
    write_atomically(data_dir / "val.bin", val_ids.tobytes())
    meta = {
        **wanted,
        "source": str(source),
        "source_chars": n,
        "train_tokens": int(train_ids.size),
        "val_tokens": int(val_ids.size),
        # characters per token, for bits-per-character from a per-token loss
        "train_chars": split,
        "val_chars": n - split,
        "dtype": np.dtype(TOKEN_DTYPE).name,
        "tokenizer": tok.meta(),
    }
    write_atomically(data_dir / "meta.json", json.dumps(meta, indent=1).encode())
    return meta
