"""The corpus pipeline: every kind of input (issue 12) to one prepared folder (issues 14 and 20), the
windows read from it, and each bad input's clear error. No network: every corpus is made here."""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import datasets
import numpy as np
import pytest
import tiktoken
import torch
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader

from nanogpt import CONFIG_DIR
from nanogpt.data import (
    CharTokenizer,
    Corpus,
    CorpusConfig,
    EvalWindows,
    GPT2Tokenizer,
    TextDataModule,
    TrainWindows,
    encode,
    find_corpus,
    prepare,
    prepare_corpus,
    sources,
    tokenizer_from_meta,
)
from nanogpt.data import corpus as corpus_module
from nanogpt.data.sources import Source
from nanogpt.runs.folder import RunDir
from nanogpt.training.job import instantiate, train

from .helpers import TINY, compose_train, make_text

HOST = socket.gethostname()
needs_tiktoken = pytest.mark.skipif(
    not os.environ.get("TIKTOKEN_CACHE_DIR"),
    reason="set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files",
)
KINDS = ["char", pytest.param("gpt2", marks=needs_tiktoken)]


@functools.cache
def text_data() -> dict:
    """configs/data/text.yaml, composed: the one home of the data options' defaults."""
    data = compose_train(["data=text", "model.block_size=16"]).data
    return {k: data[k] for k in data if k != "source"}  # source: ??? until the user names one


def config(data_dir: Path, **options) -> CorpusConfig:
    """The corpus options of data=text, with ``options`` instead of its own."""
    fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    values = {k: v for k, v in text_data().items() if k in fields}
    return CorpusConfig(**{**values, "source": None, "data_dir": data_dir, **options})


def datamodule(data_dir: Path, corpus: Corpus | None = None, **options) -> TextDataModule:
    """data=text's DataModule, as train() builds it, with ``options`` instead of its own."""
    node = OmegaConf.create({**text_data(), "source": None, "data_dir": str(data_dir), **options})
    return instantiate(node, **({"corpus": corpus} if corpus is not None else {}))


def options_json(data_dir: Path) -> str:
    """data=text's corpus options but ``data_dir`` and ``path``, for a child process."""
    options = dataclasses.asdict(config(data_dir))
    return json.dumps({k: v for k, v in options.items() if k not in ("data_dir", "path")})


def empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def split_ids(corpus: Corpus) -> tuple[list[int], list[int]]:
    return corpus.tokens("train").tolist(), corpus.tokens("val").tolist()


def assert_tokens(corpus: Corpus, train: list[int], val: list[int]) -> None:
    """Each split holds exactly these tokens; a failure says where, not all of them."""
    for split, want in (("train", train), ("val", val)):
        got = corpus.tokens(split).tolist()
        same = got == want
        pairs = enumerate(zip(got, want, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(got), len(want)))
        assert same, f"{split}.bin: {len(got)} tokens, expected {len(want)}; they differ from index {at}"


def reference(docs: list[str], kind: str, val_fraction: float = 0.1) -> tuple[list[int], list[int], int]:
    """The tokens nanoGPT's way gives: join the documents by the separator, split the text at the
    last ``val_fraction`` of its characters (a separator goes whole to the side it begins on), encode
    each side whole (tiktoken encodes its <|endoftext|> as the one token); and the split's index."""
    docs = [d for d in docs if d]
    sep = "<|endoftext|>" if kind == "gpt2" else "\n\n"
    text = sep.join(docs)
    split = int(len(text) * (1 - val_fraction))
    starts = np.cumsum([len(d) + len(sep) for d in docs[:-1]]) - len(sep)
    for start in starts:
        if start < split < start + len(sep):
            split = int(start) + len(sep)
    if kind == "gpt2":
        enc = tiktoken.get_encoding("gpt2")
        return (
            enc.encode(text[:split], allowed_special="all"),
            enc.encode(text[split:], allowed_special="all"),
            split,
        )
    tok = CharTokenizer.from_text(text)
    return tok.encode(text[:split]), tok.encode(text[split:]), split


# --- Tiny Shakespeare: nanoGPT's counts, and the bytes of the code before the single pipeline ---

SHAKESPEARE = {
    # kind: (vocab, train, val, md5 of train.bin, md5 of val.bin) as prepared by the code before issue 20
    "char": (65, 1_003_854, 111_540, "6262d87c65a610df308d8fe3fe690f59", "27e42271dd1f6c5d01c615ee1cd716f7"),
    "gpt2": (50257, 301_966, 36_059, "f6eea82ee7b1600588720fce07669c52", "61250e280189555fae15c630ea9b5c02"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_shakespeare_prepares_to_nanogpts_split_byte_for_byte(
    shakespeare_path, tmp_path, monkeypatch, kind
):
    if kind == "gpt2":  # some 270 reads, each cut between two lines of a speech
        monkeypatch.setattr(sources, "CHUNK_BYTES", 4096)
    corpus = prepare_corpus(config(tmp_path, path=str(shakespeare_path), tokenizer=kind))
    vocab, train_tokens, val_tokens, train_md5, val_md5 = SHAKESPEARE[kind]
    assert corpus.folder == tmp_path / f"{kind}-6fb458f12320-val0.1-v{corpus_module.FORMAT_VERSION}"
    assert corpus.vocab_size == vocab and corpus.meta.dtype == "uint16"
    assert (corpus.meta.train_tokens, corpus.meta.val_tokens) == (train_tokens, val_tokens)
    assert (corpus.meta.train_chars, corpus.meta.val_chars) == (1_003_854, 111_540)
    # the CPU recipe's tokens are bitwise those it always had
    assert hashlib.md5(corpus.path("train").read_bytes()).hexdigest() == train_md5
    assert hashlib.md5(corpus.path("val").read_bytes()).hexdigest() == val_md5
    text = shakespeare_path.read_bytes().decode()
    train, val, _ = reference([text], kind)
    assert_tokens(corpus, train, val)
    assert corpus.tokenizer().decode(train[:14])[:14] == "First Citizen:"


# --- one corpus however it is given, and every kind of input through one path ---


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["the file", "its folder", "a glob"])
def test_a_text_file_as_data_path_or_data_source_is_the_same_corpus(tmp_path, text_path, kind, form):
    by_path = prepare_corpus(config(tmp_path / "a", path=str(text_path), tokenizer=kind))
    source = {"the file": text_path, "its folder": text_path.parent, "a glob": text_path.parent / "*.txt"}[
        form
    ]
    by_source = prepare_corpus(config(tmp_path / "b", source=str(source), tokenizer=kind))
    assert by_path.folder.name == by_source.folder.name
    for split in ("train", "val"):
        assert by_path.path(split).read_bytes() == by_source.path(split).read_bytes()
    assert by_path.meta.source != by_source.meta.source  # the description of what was prepared
    assert dataclasses.replace(by_path.meta, source="") == dataclasses.replace(by_source.meta, source="")
    assert by_path.meta.documents == 1


DOCS = [make_text(30, seed=i) for i in range(6)] + ["", "日本語 ½ — one short document\n"]


def write_documents(tmp_path: Path, form: str, docs: list[str]) -> str:
    """``docs`` as a corpus of the kind ``form``; returns its data.source."""
    if form == "text files":
        folder = tmp_path / "corpus"
        for i, doc in enumerate(docs):  # sorted by path, so in document order; some in subfolders
            path = folder / f"{i:02d}-more" / f"{i}.md" if i % 2 else folder / f"{i:02d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(doc)
        (folder / "notes.bin").write_bytes(b"\x00\xff not text")  # a folder gives its .txt and .md only
        return str(folder)
    table = datasets.Dataset.from_dict({"id": list(range(len(docs))), "body": docs})
    if form == "saved":
        datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(
            str(tmp_path / "saved")
        )
        return f"hf:{tmp_path / 'saved'}"
    path = tmp_path / f"docs.{form}"
    if form == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)))
    elif form == "csv":
        table.to_csv(str(path), index=False)
    else:
        table.to_parquet(str(path))
    return str(path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["text files", "jsonl", "csv", "parquet", "saved"])
def test_documents_are_separated_and_the_val_split_is_the_last_tenth_of_the_characters(tmp_path, form, kind):
    source = write_documents(tmp_path, form, DOCS)
    corpus = prepare_corpus(config(tmp_path / "data", source=source, text_column="body", tokenizer=kind))
    train, val, split = reference(DOCS, kind)
    assert_tokens(corpus, train, val)
    meta = corpus.meta
    assert meta.documents == 7  # the empty one is left out, with no separator for it
    assert (meta.train_chars, meta.train_tokens, meta.val_tokens) == (split, len(train), len(val))
    joined = ("<|endoftext|>" if kind == "gpt2" else "\n\n").join(d for d in DOCS if d)
    assert meta.train_chars + meta.val_chars == len(joined)
    assert corpus.tokenizer().decode(train + val) == joined  # every character, in order, and no more
    if kind == "char":
        assert corpus.vocab_size == len(set(joined))


# Whitespace runs around newlines, multi-byte characters that straddle reads, contractions.
TRICKY = [
    "foo\n\nBar",
    "a  \nB",
    " \n x",
    "it's\n'tis",
    "a\r\nb",
    "日本\n語",
    "  \t\n",
    "12\n34",
    "x\n",
    "\n",
    "é",
]


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_gives_the_tokens_of_encoding_each_split_whole(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(TRICKY, size=3000)) + "end\n"
    path = tmp_path / "tricky.txt"
    path.write_bytes(text.encode())  # as is: write_text translates newlines on Windows
    monkeypatch.setattr(sources, "CHUNK_BYTES", 7)
    corpus = prepare_corpus(config(tmp_path / "d", path=str(path), tokenizer=kind))
    train, val, split = reference([text], kind)
    assert (corpus.meta.train_chars, corpus.meta.val_chars) == (split, len(text) - split)
    assert_tokens(corpus, train, val)
    if kind == "gpt2":  # a cut after any newline before a non-space would not do
        tok = GPT2Tokenizer()
        assert tok.encode("foo\n\n") + tok.encode("Bar") != tok.encode("foo\n\nBar")


@needs_tiktoken
def test_a_file_without_clean_cuts_is_still_read_in_pieces(tmp_path, monkeypatch):
    # CRLF line ends: no newline sits between two non-spaces, so no cut is clean
    text = make_text(400).replace("\n", "\r\n")
    monkeypatch.setattr(encode, "UNCUT_LIMIT", 2048)  # held at most this long, then cut anyway
    pieces = list(
        encode._pieces(
            iter([text[i : i + 256] for i in range(0, len(text), 256)]), len(text), 13, encode.bpe_cut
        )
    )
    assert len(pieces) > 5 and max(len(piece) for _, piece in pieces) < 2048 + 256
    assert "".join(piece for _, piece in pieces) == text
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    monkeypatch.setattr(sources, "CHUNK_BYTES", 256)
    corpus = prepare_corpus(config(tmp_path / "data", path=str(tmp_path / "crlf.txt"), tokenizer="gpt2"))
    assert corpus.tokenizer().decode(sum(split_ids(corpus), [])) == text  # every character, in order


@pytest.mark.parametrize("kind", KINDS)
def test_parallel_tokenization_keeps_the_order(tmp_path, monkeypatch, kind):
    source = write_documents(tmp_path, "text files", DOCS)
    one = prepare_corpus(config(tmp_path / "one", source=source, tokenizer=kind, num_proc=1))
    monkeypatch.setattr(encode, "BATCH_CHARS", 512)  # some 30 tasks
    monkeypatch.setattr(encode, "PROCESS_CHARS", 1000)  # and a corpus this small gets its processes
    processes, real = [], encode._in_order
    monkeypatch.setattr(encode, "_in_order", lambda *args: processes.append(args[-1]) or real(*args))
    two = prepare_corpus(config(tmp_path / "two", source=source, tokenizer=kind, num_proc=2))
    assert processes == [2]  # two worker processes tokenized it
    assert split_ids(one) == split_ids(two) and one.meta == two.meta


# --- a prepared folder: found, never rewritten, never damaged unnoticed ---


def test_each_corpus_gets_its_own_folder_which_is_never_rewritten(tmp_path, text_path, monkeypatch):
    # issue 14: run B on another text re-prepared the folder run A was validating on
    data_dir = tmp_path / "d"
    a = prepare_corpus(config(data_dir, path=str(text_path)))
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in a.folder.iterdir()}
    # the same text and tokenizer again, or from another path: the same folder, found, not rebuilt
    copy = tmp_path / "copy.txt"
    copy.write_bytes(text_path.read_bytes())
    with monkeypatch.context() as m:
        m.setattr(prepare, "write_tokens", lambda *a, **k: pytest.fail("prepared again"))
        assert prepare_corpus(config(data_dir, path=str(copy))) == a
        assert prepare_corpus(config(data_dir, source=str(text_path))) == a
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in a.folder.iterdir()} == files
    # another text, val fraction, tokenizer or column is another folder
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1) + "zebra\n")
    b = prepare_corpus(config(data_dir, path=str(other)))
    assert "z" in b.meta.tokenizer["vocab"] and b.meta.checksum == hashlib.md5(other.read_bytes()).hexdigest()
    c = prepare_corpus(config(data_dir, path=str(text_path), val_fraction=0.2))
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"a": f"x{i}" * 40, "b": f"y{i}" * 40}) + "\n" for i in range(9)))
    by_a = prepare_corpus(config(data_dir, source=str(jsonl), text_column="a"))
    by_b = prepare_corpus(config(data_dir, source=str(jsonl), text_column="b"))
    assert len({x.folder for x in (a, b, c, by_a, by_b)}) == 5 and all(x.folder.is_dir() for x in (a, b, c))


def test_a_saved_dataset_saved_again_with_other_rows_is_prepared_anew(tmp_path):
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": [make_text(30, seed=1)]}).save_to_disk(str(saved))
    first = prepare_corpus(config(tmp_path / "data", source=f"hf:{saved}"))
    assert prepare_corpus(config(tmp_path / "data", source=f"hf:{saved}")) == first
    datasets.Dataset.from_dict({"text": [make_text(30, seed=2)]}).save_to_disk(str(tmp_path / "other"))
    shutil.rmtree(saved)
    shutil.move(str(tmp_path / "other"), str(saved))  # the same folder, new contents
    second = prepare_corpus(config(tmp_path / "data", source=f"hf:{saved}"))
    assert second.folder != first.folder and split_ids(second) != split_ids(first)


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path):
    # issue 14: OverflowError: Python integer 65536 out of bounds for uint16
    chars = [chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c < 0xE000]
    text = ("".join(chars) + "\n") * 2  # the val split ends with the largest ids
    path = tmp_path / "wide.txt"
    path.write_bytes(text.encode())
    corpus = prepare_corpus(config(tmp_path / "d", path=str(path)))
    tok = corpus.tokenizer()
    assert corpus.meta.dtype == "uint32" and tok.vocab_size == len(chars) + 1 > 65_536
    assert corpus.path("train").stat().st_size == corpus.meta.train_tokens * 4
    val = corpus.tokens("val")
    assert tok.decode(val.tolist()) == text[corpus.meta.train_chars :] and val.max() >= 65_536
    for windows in (
        TrainWindows(corpus.path("train"), 64, 4, seed=0, dtype="uint32"),
        EvalWindows(corpus.path("val"), 64, 4, num_batches=None, dtype="uint32"),
    ):
        x, _ = next(iter(windows))
        assert tok.decode(x[0].tolist()) in text
    # the datamodule reads it through the same meta
    dm = datamodule(tmp_path / "d", path=str(path), block_size=64, batch_size=4)
    dm.prepare_data()
    x, _ = next(iter(dm.train_dataloader()))
    assert tok.decode(x[0].tolist()) in text


def damage(corpus: Corpus, how: str) -> None:
    meta_path = corpus.folder / "meta.json"
    fields = json.loads(meta_path.read_text())
    if how == "train.bin longer than meta.json says":  # as after the kill -9 of issue 14
        with open(corpus.path("train"), "ab") as f:
            f.write(b"\0" * 4096)
    elif how == "val.bin missing":
        corpus.path("val").unlink()
    elif how == "meta.json cut short":
        meta_path.write_text(meta_path.read_text()[:50])
    elif how == "meta.json lacks a key":
        meta_path.write_text(json.dumps({k: v for k, v in fields.items() if k != "dtype"}))
    elif how == "meta.json has an unknown key":
        meta_path.write_text(json.dumps({**fields, "corpus_dir": str(corpus.folder)}))
    elif how == "meta.json has a wrong type":
        meta_path.write_text(json.dumps({**fields, "train_tokens": str(fields["train_tokens"])}))
    elif how == "meta.json's vocabulary permuted":  # issue 21: valid JSON, it trained the wrong mapping
        vocab = fields["tokenizer"]["vocab"]
        fields["tokenizer"]["vocab"] = vocab[1:] + vocab[:1]
        meta_path.write_text(json.dumps(fields, indent=1))
    elif how == "a byte of train.bin flipped beyond the vocabulary":  # issue 21: an IndexError mid-run
        with open(corpus.path("train"), "r+b") as f:
            f.seek(2 * 5 + 1)  # the high byte of token 5, a little-endian uint16
            byte = f.read(1)[0]
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte ^ 0x40]))


DAMAGE = {
    "train.bin longer than meta.json says": r"train.bin holds \d[\d,]* bytes, but meta.json counts",
    "val.bin missing": "FileNotFoundError",
    "meta.json cut short": "JSONDecodeError",
    "meta.json lacks a key": "meta.json lacks dtype",
    "meta.json has an unknown key": "meta.json has unknown keys corpus_dir",
    "meta.json has a wrong type": r"meta.json's train_tokens is '\d+'; expected int",
    "meta.json's vocabulary permuted": "meta.json does not match its digest: it was changed after",
    "a byte of train.bin flipped beyond the vocabulary": (
        r"train.bin holds the token id 16\d\d\d at token 5, beyond the vocabulary of \d\d tokens in meta.json"
    ),
}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_folder_is_refused_naming_the_folder_to_delete(tmp_path, text_path, how):
    corpus = prepare_corpus(config(tmp_path, path=str(text_path)))
    damage(corpus, how)
    folder = re.escape(str(corpus.folder))
    with pytest.raises(
        ValueError, match=rf"{folder} is damaged \({DAMAGE[how]}.*delete the folder {folder} and run again"
    ):
        prepare_corpus(config(tmp_path, path=str(text_path)))
    with pytest.raises(ValueError, match=rf"delete the folder {folder}"):
        datamodule(tmp_path, path=str(text_path), block_size=8, batch_size=2).setup("fit")
    with pytest.raises(ValueError, match=rf"delete the folder {folder}"):
        Corpus.read(corpus.folder)


KILLED_BEFORE_META = """
import json, os, signal, sys
from nanogpt.data import CorpusConfig, corpus, prepare_corpus
def killed(*args, **kwargs):  # meta.json is next: train.bin and val.bin are complete
    os.kill(os.getpid(), signal.SIGKILL)
corpus.CorpusMeta.write = killed
prepare_corpus(CorpusConfig(**json.loads(sys.argv[1]), data_dir=sys.argv[2], path=sys.argv[3]))
"""


def test_a_preparation_killed_before_meta_json_leaves_nothing_that_is_used(tmp_path, text_path):
    # issue 14: kill -9 between train.bin and meta.json left a folder the next run accepted
    data_dir = tmp_path / "d"
    options = options_json(data_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_BEFORE_META, options, str(data_dir), str(text_path)]
    )
    assert child.wait() == -signal.SIGKILL
    (orphan,) = data_dir.iterdir()
    assert orphan.name.startswith(".preparing-char-") and orphan.name.endswith(f".pid{child.pid}.{HOST}")
    assert {p.name for p in orphan.iterdir()} == {"train.bin", "val.bin"}
    with pytest.raises(FileNotFoundError, match=r"is not prepared in data.data_dir=.*Prepare it first"):
        find_corpus(config(data_dir, path=str(text_path)))

    corpus = prepare_corpus(config(data_dir, path=str(text_path)))  # builds afresh, removes the dead one's
    assert [p.name for p in data_dir.iterdir()] == [corpus.folder.name]
    assert corpus.meta.train_tokens + corpus.meta.val_tokens == len(text_path.read_text())


INTERRUPTED = """
import json, os, signal, sys, time
from pathlib import Path
from nanogpt.data import CorpusConfig, encode, prepare_corpus
options, data_dir, text, busy = sys.argv[1:]
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started in the background
encode.PROCESS_CHARS, encode.BATCH_CHARS = 1000, 512  # worker processes for this small text

encode_batch = encode._Encoder.__call__

def first_batch_slow(self, batch):  # in a worker: the first batch takes long, so the other worker
    Path(busy, str(os.getpid())).touch()  # soon waits for tasks, as the parent waits for the first
    try:
        os.close(os.open(busy + ".first", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return encode_batch(self, batch)
    time.sleep(600)

encode._Encoder.__call__ = first_batch_slow

class SIGTERMException(SystemExit):  # Lightning's, which train's SIGTERM handler raises
    pass

def terminated(*args):
    raise SIGTERMException

signal.signal(signal.SIGTERM, terminated)

def children():  # this process's, running or not yet reaped
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                pids.append(int(stat.parent.name))
        except (OSError, IndexError):  # gone meanwhile
            pass
    return pids

try:
    prepare_corpus(CorpusConfig(**{**json.loads(options), "num_proc": 2}, data_dir=data_dir, path=text))
except BaseException as err:
    print(json.dumps({"raised": type(err).__name__, "children": children()}), flush=True)
    sys.exit(130 if isinstance(err, KeyboardInterrupt) else 143)
"""


def running(pid: int) -> bool:
    """Whether a process runs; a zombie (dead, waiting for its parent to reap it) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_busy_preparation(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A child process preparing a text with two worker processes, once both are busy; and their pids."""
    text, busy, data_dir = tmp_path / "input.txt", tmp_path / "busy", tmp_path / "data"
    text.write_text(make_text(100))
    busy.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, options_json(data_dir), str(data_dir), str(text), str(busy)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
    )
    deadline = time.monotonic() + 120
    while len(list(busy.iterdir())) < 2:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.05)
    return child, [int(p.name) for p in busy.iterdir()]


@pytest.mark.skipif(sys.platform != "linux", reason="reads the process table in /proc")
@pytest.mark.parametrize(
    ("how", "raised", "code"),
    [("Ctrl-C", "KeyboardInterrupt", 130), ("SIGTERM", "SIGTERMException", 143)],
)
def test_an_interrupted_preparation_stops_its_workers_quietly_and_keeps_nothing(tmp_path, how, raised, code):
    # issue 21: Ctrl-C exited 1 with ~125 lines of the workers' tracebacks and "TimeoutError: ", and
    # after SIGTERM three workers were still alive 31 minutes later
    child, workers = start_busy_preparation(tmp_path)
    if how == "Ctrl-C":
        os.killpg(child.pid, signal.SIGINT)  # a terminal signals the whole group, workers too
    else:
        os.kill(child.pid, signal.SIGTERM)  # as `kill <pid>`: the parent alone
    stdout, stderr = child.communicate(timeout=60)
    assert (child.returncode, stderr) == (code, "")  # the workers printed nothing
    # it came out of prepare_corpus as it came in, with the workers already reaped
    assert json.loads(stdout) == {"raised": raised, "children": []}
    assert not any(running(pid) for pid in workers)
    assert empty(tmp_path / "data")  # no temporary folder either


@pytest.mark.skipif(sys.platform != "linux", reason="reads the process table in /proc")
def test_the_workers_of_a_killed_preparation_die_with_it(tmp_path):
    child, workers = start_busy_preparation(tmp_path)
    child.kill()  # kill -9: nothing of the parent runs
    child.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in workers):
        assert time.monotonic() < deadline, (
            f"workers {[p for p in workers if running(p)]} outlived their parent"
        )
        time.sleep(0.05)


@pytest.mark.parametrize("form", ["text files", "jsonl"])
def test_a_failed_preparation_leaves_nothing_that_a_later_run_would_use(tmp_path, monkeypatch, form):
    source = write_documents(tmp_path, form, DOCS)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C after the token files, before meta.json

    monkeypatch.setattr(corpus_module.CorpusMeta, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(config(tmp_path / "data", source=source, text_column="body"))
    assert list((tmp_path / "data").iterdir()) == []  # no folder, no temporary one (nor datasets' files)
    monkeypatch.undo()
    assert prepare_corpus(config(tmp_path / "data", source=source, text_column="body")).meta.documents == 7


def test_only_dead_preparations_of_this_host_are_removed(tmp_path, text_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no process has this pid now
    dead = child.pid
    folders = {
        "dead here": tmp_path / f".preparing-char-x-val0.1-v3.ab12.pid{dead}.{HOST}",
        "alive here": tmp_path / f".preparing-char-x-val0.1-v3.cd34.pid{os.getpid()}.{HOST}",
        "other host": tmp_path / f".preparing-char-x-val0.1-v3.ef56.pid{dead}.not-{HOST}",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "train.bin").write_bytes(b"\0\0")
    prepare_corpus(config(tmp_path, path=str(text_path)))
    assert {name for name, folder in folders.items() if folder.exists()} == {"alive here", "other host"}


def test_the_later_of_two_racing_preparations_uses_the_first_ones_folder(tmp_path, text_path, monkeypatch):
    # The worst interleaving, forced: another process publishes the folder just before this one
    # renames its own copy into place.
    rename, theirs = os.rename, {}

    def other_process_wins(src, dst):
        if not theirs:
            theirs["racing"] = True  # the other process's own rename goes straight through
            theirs["corpus"] = prepare_corpus(config(tmp_path, path=str(text_path)))
            theirs["inode"] = theirs["corpus"].path("train").stat().st_ino
        rename(src, dst)

    monkeypatch.setattr(corpus_module.os, "rename", other_process_wins)
    ours = prepare_corpus(config(tmp_path, path=str(text_path)))
    assert ours == theirs["corpus"] and ours.path("train").stat().st_ino == theirs["inode"]
    assert [p.name for p in tmp_path.iterdir()] == [ours.folder.name]  # ours was discarded


RACER = """
import hashlib, json, sys, time
from pathlib import Path
from nanogpt.data import CorpusConfig, prepare_corpus
options, data_dir, text, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
corpus = prepare_corpus(CorpusConfig(**json.loads(options), data_dir=data_dir, path=text))
files = sorted(corpus.folder.iterdir())
print(json.dumps([str(corpus.folder), [hashlib.md5(f.read_bytes()).hexdigest() for f in files]]))
"""


def test_two_processes_preparing_one_text_at_once_agree(tmp_path):
    text = tmp_path / "big.txt"
    text.write_text(make_text(40_000))  # about 2 MB: both are still building when the first ends
    go, ready = tmp_path / "go", [tmp_path / "ready0", tmp_path / "ready1"]
    options = options_json(tmp_path)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, options, str(tmp_path / "d"), str(text), str(r), str(go)],
            stdout=subprocess.PIPE,
        )
        for r in ready
    ]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)  # both have imported nanogpt and wait at the start line
    go.touch()
    results = [json.loads(r.communicate(timeout=120)[0]) for r in racers]
    assert all(r.returncode == 0 for r in racers)
    assert results[0] == results[1]
    assert [p.name for p in (tmp_path / "d").iterdir()] == [Path(results[0][0]).name]


# --- prepared once per run; other ranks find it ---


@pytest.fixture
def checksums(monkeypatch) -> list[str]:
    """The descriptions of the corpora checksummed (each a read of the whole corpus), in order."""
    calls, real = [], Source.checksum

    def counted(source: Source) -> str:
        calls.append(source.description)
        return real(source)

    monkeypatch.setattr(Source, "checksum", counted)
    return calls


def test_a_run_prepares_and_checksums_its_corpus_once(tmp_path, checksums):
    # train() prepares before building the model, and Lightning's fit() calls prepare_data() again
    source = write_documents(tmp_path, "text files", [make_text(300, seed=1), make_text(300, seed=2)])
    cfg = compose_train([*TINY, "data=text", "callbacks.bleu=null", f"data.source={source}"])
    with open_dict(cfg):
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    metrics = train(cfg)
    assert len(checksums) == 1 and metrics["step"] == 40
    (folder,) = (tmp_path / "data").glob("char-*")
    corpus = Corpus.read(folder)
    assert corpus.meta.documents == 2 and corpus.meta.source == f"2 text file(s) from {source}"
    # it learned something: a uniform guess scores ln(vocab) = 3.87; 40 steps reach about 3.1
    assert metrics["val/loss"] < 0.9 * np.log(corpus.vocab_size)


def test_only_local_rank_zero_of_a_run_prepares_the_others_find_its_folder(tmp_path, text_path, monkeypatch):
    import nanogpt.training.spec as spec_module

    cfg = compose_train([*TINY, f"data.path={text_path}"])
    with open_dict(cfg):
        cfg.data.data_dir = str(tmp_path / "data")
    run = RunDir.at(tmp_path / "run")
    prepared = spec_module.prepare_run(cfg, run, requeued=False).corpus  # local rank 0 (no launcher)

    def never(*args, **kwargs):
        raise AssertionError("a rank other than local rank 0 prepared the corpus")

    monkeypatch.setattr(spec_module, "prepare_corpus", never)
    monkeypatch.setenv("LOCAL_RANK", "1")  # what torchrun and Lightning's launcher give the second rank
    found = spec_module.prepare_run(cfg, run, requeued=False)
    assert found.corpus == prepared and found.model.vocab_size == prepared.vocab_size


def test_a_datamodule_checksums_its_corpus_at_most_once(tmp_path, text_path, checksums):
    dm = datamodule(tmp_path, path=str(text_path), block_size=8, batch_size=2)
    dm.prepare_data()
    dm.prepare_data()
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    assert dm.vocab_size == len(set(text_path.read_text())) and len(checksums) == 1
    # a module given the corpus (train() under DDP, once rank 0 prepared it) never checksums it
    given = datamodule(tmp_path, path=str(text_path), block_size=8, batch_size=2, corpus=dm.corpus)
    given.prepare_data()
    given.setup("fit")
    assert given.corpus is dm.corpus and len(checksums) == 1


def test_other_ranks_find_the_corpus_rank_zero_prepared_without_building_it(tmp_path, text_path):
    # Under DDP only local rank 0 runs prepare_data(); the other ranks go straight to setup().
    rank0 = datamodule(tmp_path, path=str(text_path), block_size=8, batch_size=2)
    rank0.prepare_data()
    rank1 = datamodule(tmp_path, path=str(text_path), block_size=8, batch_size=2)
    rank1.setup("fit")
    assert rank1.corpus == rank0.corpus

    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=2))
    unprepared = datamodule(tmp_path, path=str(other), block_size=8, batch_size=2)
    with pytest.raises(
        FileNotFoundError, match=rf"data.data_dir={re.escape(str(tmp_path))} .*local rank 0 prepares it"
    ):
        unprepared.setup("fit")
    assert len(list(tmp_path.glob("char-*"))) == 1  # finding builds nothing


def test_find_waits_for_rank_zero_to_publish_then_gives_up_naming_data_dir(tmp_path, text_path, monkeypatch):
    # a clock that only moves when find_corpus sleeps: no test waits on the wall clock
    clock = [0.0]
    monkeypatch.setattr(prepare.time, "monotonic", lambda: clock[0])

    def rank_zero_prepares_meanwhile(seconds):
        clock[0] += seconds
        if clock[0] >= 3:
            prepare_corpus(config(tmp_path, path=str(text_path)))

    monkeypatch.setattr(prepare.time, "sleep", rank_zero_prepares_meanwhile)
    corpus = find_corpus(config(tmp_path, path=str(text_path)), wait_s=60)
    assert corpus.folder.parent == tmp_path and clock[0] == 3

    monkeypatch.setattr(prepare.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=3))
    clock[0] = 0
    with pytest.raises(
        FileNotFoundError, match=rf"data.data_dir={re.escape(str(tmp_path))} .*after waiting 10 s"
    ):
        find_corpus(config(tmp_path, path=str(other)), wait_s=10)
    assert clock[0] == 10
    # input.txt that rank 0 has yet to download is waited for as well
    clock[0] = 0
    with pytest.raises(
        FileNotFoundError, match=rf"data.data_dir={re.escape(str(tmp_path / 'e'))} .*after waiting 5 s"
    ):
        find_corpus(config(tmp_path / "e", url="https://example.invalid/input.txt"), wait_s=5)


# --- memory ---

PEAK_RSS = """
import json, resource, sys
from nanogpt.data import CorpusConfig, prepare_corpus
if sys.argv[1] != "-":
    prepare_corpus(CorpusConfig(**json.loads(sys.argv[3]), data_dir=sys.argv[2], path=sys.argv[1]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_preparation_streams_so_memory_does_not_grow_with_the_text(tmp_path):
    # issue 14: a 50 MB text peaked at 965 MiB. Streaming keeps a few pieces (256 KiB of text each)
    # and their tokens in memory: some 10 MiB above a process that only imports. The code before
    # streaming took 104 MiB above it for this text.
    text = tmp_path / "big.txt"
    with text.open("w") as f:
        block = make_text(20_000) + "½ — 日本\n"
        for _ in range(24 * 2**20 // len(block.encode())):
            f.write(block)
    options = options_json(tmp_path)

    def peak_kib(*args: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *args, options], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    grown_mib = (peak_kib(str(text), str(tmp_path / "d")) - peak_kib("-", "-")) / 1024
    assert grown_mib < 48


# --- tokenizers ---


def test_char_tokenizer_round_trips():
    text = make_text(50)
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab == sorted(set(text))
    with pytest.raises(ValueError, match=r"characters \['~'\] are not in this model's"):
        tok.encode("hello~")


@needs_tiktoken
def test_gpt2_tokenizer_round_trips():
    tok = GPT2Tokenizer()
    text = "ROMEO: But, soft! what light through yonder window breaks?\n"
    ids = tok.encode(text)
    assert tok.vocab_size == 50257 and len(ids) < len(text)
    assert tok.decode(ids) == text
    assert tokenizer_from_meta(tok.meta()).encode(text) == ids
    # an id of a padded vocabulary (50304 for experiment=shakespeare) has no text: it reads as U+FFFD
    assert tok.decode([*ids[:3], 50300, *ids[3:]]) == tok.decode(ids[:3]) + "\ufffd" + tok.decode(ids[3:])


# --- windows ---


@pytest.fixture
def prepared(tmp_path, text_path) -> Path:
    """The prepared folder of the fixture text (char tokens: uint16)."""
    return prepare_corpus(config(tmp_path, path=str(text_path))).folder


def take(it, n):
    return [next(it) for _ in range(n)]


def test_windows_are_memmap_slices_and_y_is_x_shifted_by_one(prepared):
    data = np.memmap(prepared / "train.bin", dtype=np.uint16, mode="r")
    for x, y in take(iter(TrainWindows(prepared / "train.bin", 16, 4, seed=0, dtype="uint16")), 3):
        assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
        torch.testing.assert_close(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y, strict=True):
            starts = [i for i in range(len(data) - 16) if (data[i : i + 16] == row_x.numpy()).all()]
            assert any((data[s + 1 : s + 17] == row_y.numpy()).all() for s in starts)


def test_train_windows_differ_across_ranks_and_workers(prepared):
    path = prepared / "train.bin"
    rank0 = take(iter(TrainWindows(path, 16, 4, seed=7, rank=0, dtype="uint16")), 20)
    rank1 = take(iter(TrainWindows(path, 16, 4, seed=7, rank=1, dtype="uint16")), 20)
    assert not any(torch.equal(a[0], b[0]) for a in rank0 for b in rank1)

    # two workers take alternate batches of one stream: no repeats, same stream as one process
    loader = DataLoader(
        TrainWindows(path, 16, 4, seed=7, rank=0, dtype="uint16"), batch_size=None, num_workers=2
    )
    workers = take(iter(loader), 20)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(workers, rank0, strict=True))
    assert len({tuple(x.flatten().tolist()) for x, _ in workers}) == 20


def test_train_stream_resumes_at_a_batch_index(prepared):
    path = prepared / "train.bin"
    full = take(iter(TrainWindows(path, 16, 4, seed=3, dtype="uint16")), 10)
    resumed = take(iter(TrainWindows(path, 16, 4, seed=3, start_batch=6, dtype="uint16")), 4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[6:], resumed, strict=True))


def test_val_batches_are_deterministic_and_split_across_ranks(prepared):
    path = prepared / "val.bin"
    a = list(EvalWindows(path, 16, 4, num_batches=6, dtype="uint16"))
    b = list(EvalWindows(path, 16, 4, num_batches=6, dtype="uint16"))
    assert len(a) == 6 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    r0 = list(EvalWindows(path, 16, 4, num_batches=6, rank=0, world_size=2, dtype="uint16"))
    r1 = list(EvalWindows(path, 16, 4, num_batches=6, rank=1, world_size=2, dtype="uint16"))
    assert [x[0] for x in r0 + r1] and len(r0) == len(r1) == 3
    assert all(torch.equal(x[0], y[0]) for x, y in zip(r0 + r1, a[0::2] + a[1::2], strict=True))


def test_whole_val_split_uses_non_overlapping_windows(prepared):
    data = np.memmap(prepared / "val.bin", dtype=np.uint16, mode="r")
    ys = torch.cat([y for _, y in EvalWindows(prepared / "val.bin", 16, 4, num_batches=None, dtype="uint16")])
    assert ys.shape[0] == (len(data) - 16 + 15) // 16
    assert torch.equal(ys.flatten(), torch.from_numpy(data[1 : 1 + ys.numel()].astype(np.int64)))


# --- defaults ---


def test_every_data_option_has_its_default_in_text_yaml_only():
    # configs/data/text.yaml's options are spelt once in Python: the window options by TextDataModule,
    # the corpus options by CorpusConfig (which the DataModule passes the rest to); no default repeated
    text = OmegaConf.load(Path(CONFIG_DIR) / "data" / "text.yaml")
    parameters = inspect.signature(TextDataModule).parameters
    windows = set(parameters) - {"corpus", "corpus_options"}
    corpus = {f.name for f in dataclasses.fields(CorpusConfig)}
    assert windows | corpus == set(text) - {"_target_"} and not windows & corpus
    assert [name for name, p in parameters.items() if p.default is not inspect.Parameter.empty] == ["corpus"]
    assert not any(f.default is not dataclasses.MISSING for f in dataclasses.fields(CorpusConfig))
    with pytest.raises(ValueError, match=r"data.val_fracton: no such data option; .*configs/data/text.yaml"):
        TextDataModule(**{**OmegaConf.to_container(compose_train([]).data, resolve=True), "val_fracton": 0.2})
    assert compose_train([]).data.eval_batches is None  # the whole val split, for data=shakespeare_char
    assert compose_train(["experiment=shakespeare_char_cpu"]).data.eval_batches == 20


# --- bad input ---


def test_missing_text_names_the_path_and_the_override(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no text file at .*nope.txt.*data.path=/path/to/input.txt"):
        prepare_corpus(config(tmp_path, path=str(tmp_path / "nope.txt")))


def test_offline_download_fails_at_once_with_the_path_to_fill(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(FileNotFoundError) as err:
        prepare_corpus(
            config(tmp_path / "shakespeare_char", url="https://example.invalid/input.txt", md5="0" * 32)
        )
    msg = str(err.value)
    assert str(tmp_path / "shakespeare_char" / "input.txt") in msg and "data.path=/path/to/input.txt" in msg
    assert not (tmp_path / "shakespeare_char").exists()


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_checks_the_md5_and_keeps_nothing_bad(tmp_path, monkeypatch):
    body = make_text(100).encode()
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: FakeResponse(body))
    with pytest.raises(ValueError, match="md5"):
        prepare_corpus(config(tmp_path, url="https://example.invalid/input.txt", md5="0" * 32))
    assert list(tmp_path.iterdir()) == []

    md5 = hashlib.md5(body).hexdigest()
    corpus = prepare_corpus(config(tmp_path, url="https://example.invalid/input.txt", md5=md5))
    assert (tmp_path / "input.txt").read_bytes() == body and corpus.meta.checksum == md5


@pytest.mark.parametrize("given", ["data.path", "data.source"])
def test_a_corpus_without_text_is_refused(tmp_path, given):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("")
    (tmp_path / "corpus" / "b.txt").write_text("\n  \n")
    options = (
        {"path": str(tmp_path / "corpus" / "b.txt")}
        if given == "data.path"
        else {"source": str(tmp_path / "corpus")}
    )
    with pytest.raises(
        ValueError, match=r"holds no text; point data.path or data.source at a corpus with text"
    ):
        prepare_corpus(config(tmp_path / "d", **options))
    assert empty(tmp_path / "d")


@pytest.mark.parametrize("given", ["data.path", "data.source"])
def test_a_corpus_too_small_for_one_window_says_which_block_size_fits(tmp_path, given):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.\n" * 3)
    options = {"path": str(short)} if given == "data.path" else {"source": str(short)}
    dm = datamodule(tmp_path / "d", **options, block_size=32, batch_size=2)
    dm.prepare_data()
    with pytest.raises(
        ValueError,
        match=r"val split .* fewer than block_size \+ 1 = 33.*smaller model.block_size \(at most 12\)",
    ):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # issue 21: "Use a longer text or a smaller model.block_size (at most -1)"
        (
            "a",
            r"the train split of .* has 0 tokens, fewer than block_size \+ 1 = 17, .*whole corpus has 1: "
            r"0 train, 1 val\)\. Fix: give a longer text$",
        ),
        (
            make_text(100)[:200],
            r"the val split of .* has 20 tokens, fewer than block_size \+ 1 = 33, .*Fix: give a "
            r"longer text, or a smaller model.block_size \(at most 19\), or a larger data.val_fraction "
            r"\(now 0.1\)$",
        ),
    ],
    ids=["1 character", "a val split too short"],
)
def test_a_text_too_short_says_how_many_tokens_it_has_and_what_fits(tmp_path, text, error):
    path = tmp_path / "short.txt"
    path.write_text(text)
    block_size = 16 if len(text) == 1 else 32
    dm = datamodule(tmp_path / "d", path=str(path), block_size=block_size, batch_size=2)
    dm.prepare_data()
    with pytest.raises(ValueError, match=error) as err:
        dm.setup("fit")
    assert not re.search(r"at most -|-1 token", str(err.value))  # a bound no block size can meet


def test_an_empty_text_file_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(
        ValueError, match=r"holds no text; point data.path or data.source at a corpus with text"
    ):
        prepare_corpus(config(tmp_path / "d", path=str(tmp_path / "empty.txt")))
    assert empty(tmp_path / "d")


class FullDisk(io.BytesIO):
    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("form", ["text", "jsonl"])
def test_a_full_disk_is_named_with_the_free_space_and_leaves_nothing(tmp_path, monkeypatch, form):
    # issue 21: a DatasetGenerationError and its traceback
    if form == "text":
        source = str(tmp_path / "input.txt")
        Path(source).write_text(make_text(50))

        def full_open(path, mode):  # the token file is created, then nothing fits on the disk
            Path(path).touch()
            return FullDisk()

        monkeypatch.setattr(encode, "open", full_open, raising=False)
    else:
        source = write_documents(tmp_path, "jsonl", DOCS)

        def load_dataset(*args, cache_dir, **kwargs):  # datasets' builder, writing Arrow files
            arrow = Path(cache_dir) / "json" / "train-00000.arrow"
            arrow.parent.mkdir(parents=True)
            arrow.write_bytes(b"half")
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(arrow))
            except OSError as err:
                raise datasets.exceptions.DatasetGenerationError(
                    "An error occurred while generating"
                ) from err

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(OSError) as err:
        prepare_corpus(config(tmp_path / "data", source=source, text_column="body"))
    assert err.value.errno == errno.ENOSPC
    writing = r" \(writing .*train-00000.arrow\)" if form == "jsonl" else ""
    assert re.fullmatch(
        rf"\[Errno 28\] disk full: preparing .* into {re.escape(str(tmp_path / 'data'))}/char-\w+-val0.1-v\d+"
        rf"{writing} ran out of space, and [\d.]+ (bytes|KB|MB|GB|TB) is free there now; nothing was kept\. "
        r"Free some space, or point data.data_dir at a disk with room",
        str(err.value),
    ), str(err.value)
    assert empty(tmp_path / "data")  # no half-written folder, nor datasets' files


def test_a_link_out_of_a_source_folder_is_refused_unless_follow_symlinks(tmp_path):
    # issue 21: a link in data.source's folder read /etc/passwd into the corpus and its vocabulary
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    corpus.mkdir()
    outside.mkdir()
    (corpus / "a.txt").write_text(make_text(50))
    (corpus / "again.txt").symlink_to(corpus / "a.txt")  # a link within the folder is read
    (outside / "secret.txt").write_text("ZZZ secret\n")
    (outside / "more").mkdir()
    (outside / "more" / "b.txt").write_text("QQQ more\n")
    inside = prepare_corpus(config(tmp_path / "data", source=str(corpus)))
    assert inside.meta.documents == 2
    for link, target in [
        (corpus / "secret.txt", outside / "secret.txt"),
        (corpus / "more", outside / "more"),
    ]:
        link.symlink_to(target)
        for source in (corpus, corpus / "**" / "*.txt"):
            # a folder's walk meets the link to a folder, a glob goes through it to the file
            found = link if link.suffix or source == corpus else link / "b.txt"
            with pytest.raises(
                ValueError,
                match=rf"data.source={re.escape(str(source))} holds {re.escape(str(found))}, a link to "
                rf"{re.escape(str(found.resolve()))} outside {re.escape(str(corpus))}; links out of a source "
                r"are not followed. Remove the link, or pass data.follow_symlinks=true",
            ):
                prepare_corpus(config(tmp_path / "data", source=str(source)))
        link.unlink()
    assert [p.name for p in (tmp_path / "data").iterdir()] == [inside.folder.name]
    (corpus / "secret.txt").symlink_to(outside / "secret.txt")
    followed = prepare_corpus(config(tmp_path / "data", source=str(corpus), follow_symlinks=True))
    assert "Z" in followed.meta.tokenizer["vocab"] and followed.meta.documents == 3
    # the checksum is of what the link reads: a changed target is another corpus
    (outside / "secret.txt").write_text("ZZZ changed\n")
    changed = prepare_corpus(config(tmp_path / "data", source=str(corpus), follow_symlinks=True))
    assert changed.folder != followed.folder


@pytest.mark.parametrize("name", ["batch_size", "block_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes_are_refused(tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"data.{name} must be a positive integer, got {value}"):
        datamodule(tmp_path, **{name: value})


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("val_fraction", 1.0, r"data.val_fraction must be in \(0, 1\), got 1.0"),
        ("errors", "ignore", r"data.errors must be strict or replace, got 'ignore'"),
        ("num_proc", 0, r"data.num_proc must be a positive integer, or null for one per core; got 0"),
        ("tokenizer", "gpt5", r"unknown tokenizer 'gpt5'; .*data.tokenizer=cl100k_base"),
    ],
)
def test_bad_corpus_options_are_refused_before_any_work(tmp_path, option, value, error):
    with pytest.raises(ValueError, match=error):
        datamodule(tmp_path, path="nothing-is-read.txt", block_size=8, batch_size=2, **{option: value})


def test_a_source_matching_no_files_names_the_forms_that_work(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"data.source=.*nothing\*.txt matches no files; pass a text file"
    ):
        prepare_corpus(config(tmp_path / "data", source=str(tmp_path / "nothing*.txt")))
    (tmp_path / "b.csv").write_text("text\nmore text\n")
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(ValueError, match=r"mixes kinds of files \(csv, text\)"):
        prepare_corpus(config(tmp_path / "data", source=str(tmp_path / "*.*")))
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValueError, match=r"matches files nanogpt cannot read as text \(.pdf\)"):
        prepare_corpus(config(tmp_path / "data", source=str(tmp_path / "*.*")))


@pytest.mark.parametrize("given", ["data.path", "data.source"])
def test_a_file_that_is_not_utf8_is_named_with_its_byte_offset_unless_errors_replace(tmp_path, given):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(make_text(50))
    bad = corpus / "b.txt"
    bad.write_bytes("café ".encode() * 10 + b"\xff\xfe binary" + make_text(50).encode())
    options = {"path": str(bad)} if given == "data.path" else {"source": str(corpus)}
    with pytest.raises(
        ValueError, match=rf"{bad} is not UTF-8 text: the byte at offset 60 .*data.errors=replace"
    ):
        prepare_corpus(config(tmp_path / "data", **options))
    assert empty(tmp_path / "data")
    prepared = prepare_corpus(config(tmp_path / "data", **options, errors="replace"))
    assert "\ufffd" in prepared.meta.tokenizer["vocab"]
    # the replaced text's folder is not the strict one's: strict still refuses the file
    with pytest.raises(ValueError, match=rf"{bad} is not UTF-8 text"):
        prepare_corpus(config(tmp_path / "data", **options))


def test_a_missing_column_lists_the_columns(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"title": "a", "body": "some text"}\n')
    with pytest.raises(
        ValueError, match=r"has no column 'text'; its columns are title, body.*data.text_column="
    ):
        prepare_corpus(config(tmp_path / "data", source=str(jsonl)))


def test_a_saved_dataset_without_the_split_lists_its_splits(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["abc"]})}).save_to_disk(str(saved))
    with pytest.raises(ValueError, match=r"has no split 'validation'; pass one of data.split=train"):
        prepare_corpus(config(tmp_path / "data", source=f"hf:{saved}", split="validation"))


def test_a_hub_dataset_without_network_names_the_local_form(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    with pytest.raises(
        FileNotFoundError,
        match=r"could not load the Hugging Face dataset 'nobody/nothing'.*data.source=hf:folder",
    ):
        prepare_corpus(config(tmp_path / "data", source="hf:nobody/nothing"))
