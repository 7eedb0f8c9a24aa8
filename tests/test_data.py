import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nanogpt.data import (
    CharTokenizer,
    EvalWindows,
    GPT2Tokenizer,
    TextDataModule,
    TrainWindows,
    find_corpus,
    prepare,
    prepare_corpus,
    tokenizer_from_meta,
)
from nanogpt.metrics.bleu import split_tokens

from .conftest import make_text

HOST = socket.gethostname()


def test_tiny_shakespeare_prepares_to_nanogpts_split(shakespeare_path, tmp_path):
    meta = prepare_corpus(tmp_path, path=shakespeare_path)
    corpus = Path(meta["corpus_dir"])
    assert corpus == tmp_path / "char-6fb458f12320-val0.1-v2"
    assert meta["source_chars"] == 1_115_394
    assert meta["tokenizer"]["vocab_size"] == 65
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)
    assert (corpus / "train.bin").stat().st_size == 1_003_854 * 2 and meta["dtype"] == "uint16"
    train = np.memmap(corpus / "train.bin", dtype=np.uint16, mode="r")
    tok = tokenizer_from_meta(json.loads((corpus / "meta.json").read_text())["tokenizer"])
    assert tok.decode(train[:14].tolist()) == "First Citizen:"


def test_tiny_shakespeare_bpe_streams_to_the_tokens_of_the_whole_text(
    shakespeare_path, tmp_path, monkeypatch
):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    monkeypatch.setattr(prepare, "CHUNK_BYTES", 4096)  # some 270 cuts, each between two lines of a speech
    meta = prepare_corpus(tmp_path, path=shakespeare_path, tokenizer="gpt2")
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    text, tok = shakespeare_path.read_bytes().decode(), GPT2Tokenizer()
    split = meta["train_chars"]
    assert split == int(len(text) * 0.9)
    corpus = Path(meta["corpus_dir"])
    assert split_tokens(corpus, "train").tolist() == tok.encode(text[:split])
    assert split_tokens(corpus, "val").tolist() == tok.encode(text[split:])


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


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_streaming_gives_the_tokens_of_encoding_each_split_whole(tmp_path, monkeypatch, kind):
    if kind == "gpt2" and not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(TRICKY, size=3000)) + "end\n"
    path = tmp_path / "tricky.txt"
    path.write_bytes(text.encode())  # as is: write_text translates newlines on Windows
    monkeypatch.setattr(prepare, "CHUNK_BYTES", 7)
    meta = prepare_corpus(tmp_path / "d", path=path, tokenizer=kind)
    tok, split = tokenizer_from_meta(meta["tokenizer"]), int(len(text) * 0.9)
    assert (meta["source_chars"], meta["train_chars"]) == (len(text), split)
    assert split_tokens(meta["corpus_dir"], "train").tolist() == tok.encode(text[:split])
    assert split_tokens(meta["corpus_dir"], "val").tolist() == tok.encode(text[split:])
    if kind == "gpt2":  # a cut after any newline before a non-space would not do
        assert tok.encode("foo\n\n") + tok.encode("Bar") != tok.encode("foo\n\nBar")


def test_each_text_gets_its_own_folder_which_is_never_rewritten(tmp_path, text_path):
    # issue 14: run B on another text re-prepared the folder run A was validating on
    data_dir = tmp_path / "d"
    a = prepare_corpus(data_dir, path=text_path)
    files = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in Path(a["corpus_dir"]).iterdir()}
    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1) + "zebra\n")
    b = prepare_corpus(data_dir, path=other)
    assert "z" in b["tokenizer"]["vocab"]
    assert b["source_md5"] == hashlib.md5(other.read_bytes()).hexdigest()
    assert b["corpus_dir"] != a["corpus_dir"] and Path(b["corpus_dir"]).name.startswith("char-")
    # the same text and tokenizer again, or from another path: the same folder, untouched
    copy = tmp_path / "copy.txt"
    copy.write_bytes(text_path.read_bytes())
    assert prepare_corpus(data_dir, path=copy) == a
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in Path(a["corpus_dir"]).iterdir()} == files
    # another val fraction is another folder too
    c = prepare_corpus(data_dir, path=text_path, val_fraction=0.2)
    assert len({a["corpus_dir"], b["corpus_dir"], c["corpus_dir"]}) == 3


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path):
    # issue 14: OverflowError: Python integer 65536 out of bounds for uint16
    chars = [chr(c) for c in range(0x100, 0x100 + 70_000) if not 0xD800 <= c < 0xE000]
    text = ("".join(chars) + "\n") * 2  # the val split ends with the largest ids
    path = tmp_path / "wide.txt"
    path.write_bytes(text.encode())
    meta = prepare_corpus(tmp_path / "d", path=path)
    corpus, tok = Path(meta["corpus_dir"]), tokenizer_from_meta(meta["tokenizer"])
    assert meta["dtype"] == "uint32" and tok.vocab_size == len(chars) + 1 > 65_536
    assert (corpus / "train.bin").stat().st_size == meta["train_tokens"] * 4
    val = split_tokens(corpus)
    assert tok.decode(val.tolist()) == text[meta["train_chars"] :] and val.max() >= 65_536
    for windows in (
        TrainWindows(corpus / "train.bin", 64, 4, seed=0, dtype=meta["dtype"]),
        EvalWindows(corpus / "val.bin", 64, 4, num_batches=None, dtype=meta["dtype"]),
    ):
        x, _ = next(iter(windows))
        assert tok.decode(x[0].tolist()) in text
    # the datamodule reads it through the same meta
    dm = TextDataModule(tmp_path / "d", path=path, block_size=64, batch_size=4)
    dm.prepare_data()
    x, _ = next(iter(dm.train_dataloader()))
    assert tok.decode(x[0].tolist()) in text


def damage(meta: dict, how: str) -> None:
    corpus = Path(meta["corpus_dir"])
    if how == "train.bin longer than meta.json says":  # as after the kill -9 of issue 14
        with open(corpus / "train.bin", "ab") as f:
            f.write(b"\0" * 4096)
    elif how == "val.bin missing":
        (corpus / "val.bin").unlink()
    elif how == "meta.json cut short":
        (corpus / "meta.json").write_text((corpus / "meta.json").read_text()[:50])


@pytest.mark.parametrize(
    "how", ["train.bin longer than meta.json says", "val.bin missing", "meta.json cut short"]
)
def test_token_files_that_disagree_with_meta_are_refused_naming_the_folder(tmp_path, text_path, how):
    meta = prepare_corpus(tmp_path, path=text_path)
    damage(meta, how)
    folder = re.escape(meta["corpus_dir"])
    with pytest.raises(ValueError, match=rf"damaged .*delete the folder {folder} and run again"):
        prepare_corpus(tmp_path, path=text_path)
    with pytest.raises(ValueError, match=rf"delete the folder {folder}"):
        TextDataModule(tmp_path, path=text_path, block_size=8, batch_size=2).setup("fit")
    with pytest.raises(ValueError, match=rf"delete the folder {folder}"):
        split_tokens(meta["corpus_dir"])


KILLED_BEFORE_META = """
import os, signal, sys
from nanogpt.data import prepare
def killed(*args, **kwargs):  # meta.json is next: train.bin and val.bin are complete
    os.kill(os.getpid(), signal.SIGKILL)
prepare.json.dumps = killed
prepare.prepare_corpus(sys.argv[1], path=sys.argv[2])
"""


def test_a_preparation_killed_before_meta_json_leaves_nothing_that_is_used(tmp_path, text_path):
    # issue 14: kill -9 between train.bin and meta.json left a folder the next run accepted
    data_dir = tmp_path / "d"
    child = subprocess.Popen([sys.executable, "-c", KILLED_BEFORE_META, str(data_dir), str(text_path)])
    assert child.wait() == -signal.SIGKILL
    (orphan,) = data_dir.iterdir()
    assert orphan.name.startswith(".preparing-char-") and orphan.name.endswith(f".pid{child.pid}.{HOST}")
    assert {p.name for p in orphan.iterdir()} == {"train.bin", "val.bin"}
    with pytest.raises(FileNotFoundError, match=r"is not prepared: no folder .*Call prepare_data\(\) first"):
        find_corpus(data_dir, path=text_path)

    meta = prepare_corpus(data_dir, path=text_path)  # builds afresh, and removes the dead one's folder
    assert [p.name for p in data_dir.iterdir()] == [Path(meta["corpus_dir"]).name]
    assert meta["train_tokens"] + meta["val_tokens"] == len(text_path.read_text())


def test_only_dead_preparations_of_this_host_are_removed(tmp_path, text_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: no process has this pid now
    dead = child.pid
    folders = {
        "dead here": tmp_path / f".preparing-char-x-val0.1-v2.ab12.pid{dead}.{HOST}",
        "alive here": tmp_path / f".preparing-char-x-val0.1-v2.cd34.pid{os.getpid()}.{HOST}",
        "other host": tmp_path / f".preparing-char-x-val0.1-v2.ef56.pid{dead}.not-{HOST}",
    }
    for folder in folders.values():
        folder.mkdir()
        (folder / "train.bin").write_bytes(b"\0\0")
    prepare_corpus(tmp_path, path=text_path)
    assert {name for name, folder in folders.items() if folder.exists()} == {"alive here", "other host"}


def test_the_later_of_two_racing_preparations_uses_the_first_ones_folder(tmp_path, text_path, monkeypatch):
    # The worst interleaving, forced: another process publishes the folder just before this one
    # renames its own copy into place.
    rename, theirs = os.rename, {}

    def other_process_wins(src, dst):
        if not theirs:
            theirs["racing"] = True  # the other process's own rename goes straight through
            theirs.update(prepare_corpus(tmp_path, path=text_path))
            theirs["inode"] = (Path(theirs["corpus_dir"]) / "train.bin").stat().st_ino
        rename(src, dst)

    monkeypatch.setattr(prepare.os, "rename", other_process_wins)
    ours = prepare_corpus(tmp_path, path=text_path)
    assert ours["corpus_dir"] == theirs["corpus_dir"]
    assert (Path(ours["corpus_dir"]) / "train.bin").stat().st_ino == theirs["inode"]
    assert [p.name for p in tmp_path.iterdir()] == [Path(ours["corpus_dir"]).name]  # ours was discarded


RACER = """
import hashlib, json, sys, time
from pathlib import Path
from nanogpt.data import prepare_corpus
data_dir, text, ready, go = sys.argv[1:]
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.001)
meta = prepare_corpus(data_dir, path=text)
files = sorted(Path(meta["corpus_dir"]).iterdir())
print(json.dumps([meta["corpus_dir"], [hashlib.md5(f.read_bytes()).hexdigest() for f in files]]))
"""


def test_two_processes_preparing_one_text_at_once_agree(tmp_path):
    text = tmp_path / "big.txt"
    text.write_text(make_text(40_000))  # about 2 MB: both are still building when the first ends
    go, ready = tmp_path / "go", [tmp_path / "ready0", tmp_path / "ready1"]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path / "d"), str(text), str(r), str(go)],
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


def test_other_ranks_find_the_folder_rank_zero_prepared(tmp_path, text_path):
    # Under DDP only local rank 0 runs prepare_data(); the other ranks go straight to setup().
    rank0 = TextDataModule(tmp_path, path=text_path, block_size=8, batch_size=2)
    rank0.prepare_data()
    rank1 = TextDataModule(tmp_path, path=text_path, block_size=8, batch_size=2)
    rank1.setup("fit")
    assert rank1.corpus_dir == rank0.corpus_dir and rank1.meta == rank0.meta
    assert rank1.meta["corpus_dir"] == str(rank1.corpus_dir)

    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=2))
    unprepared = TextDataModule(tmp_path, path=other, block_size=8, batch_size=2)
    with pytest.raises(FileNotFoundError, match=r"is not prepared: no folder .*local rank 0 prepares it"):
        unprepared.setup("fit")
    assert len(list(tmp_path.glob("char-*"))) == 1  # finding builds nothing


PEAK_RSS = """
import resource, sys
from nanogpt.data.prepare import prepare_corpus
if sys.argv[1] != "-":
    prepare_corpus(sys.argv[2], path=sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_preparation_streams_so_memory_does_not_grow_with_the_text(tmp_path):
    # issue 14: a 50 MB text peaked at 965 MiB. Streaming keeps about a chunk (1 MiB of text) and
    # its tokens in memory: at most some 20 MiB above a process that only imports. The code before
    # streaming took 104 MiB above it for this text.
    text = tmp_path / "big.txt"
    with text.open("w") as f:
        block = make_text(20_000) + "½ — 日本\n"
        for _ in range(24 * 2**20 // len(block.encode())):
            f.write(block)

    def peak_kib(*args: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, check=True
        )
        return int(out.stdout)

    grown_mib = (peak_kib(str(text), str(tmp_path / "d")) - peak_kib("-")) / 1024
    assert grown_mib < 48


def test_char_tokenizer_round_trips():
    text = make_text(50)
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab == sorted(set(text))
    with pytest.raises(ValueError, match=r"characters \['~'\] are not in this model's"):
        tok.encode("hello~")


def test_gpt2_tokenizer_round_trips():
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    tok = GPT2Tokenizer()
    text = "ROMEO: But, soft! what light through yonder window breaks?\n"
    ids = tok.encode(text)
    assert tok.vocab_size == 50257 and len(ids) < len(text)
    assert tok.decode(ids) == text
    assert tokenizer_from_meta(tok.meta()).encode(text) == ids
    # an id of a padded vocabulary (50304 for experiment=shakespeare) has no text: it reads as U+FFFD
    assert tok.decode([*ids[:3], 50300, *ids[3:]]) == tok.decode(ids[:3]) + "\ufffd" + tok.decode(ids[3:])


def test_gpt2_data_prepares(tmp_path, text_path):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    meta = prepare_corpus(tmp_path, path=text_path, tokenizer="gpt2")
    assert meta["tokenizer"] == {"kind": "gpt2", "vocab_size": 50257}
    assert 0 < meta["train_tokens"] < meta["train_chars"]


@pytest.fixture
def prepared(tmp_path, text_path) -> Path:
    """The prepared folder of the fixture text (char tokens: uint16)."""
    return Path(prepare_corpus(tmp_path, path=text_path)["corpus_dir"])


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


def test_missing_text_names_the_path_and_the_override(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no text file at .*nope.txt.*data.path=/path/to/input.txt"):
        prepare_corpus(tmp_path, path=tmp_path / "nope.txt")


def test_offline_download_fails_at_once_with_the_path_to_fill(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(FileNotFoundError) as err:
        prepare_corpus(tmp_path / "shakespeare_char", url="https://example.invalid/input.txt", md5="0" * 32)
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
        prepare_corpus(tmp_path, url="https://example.invalid/input.txt", md5="0" * 32)
    assert list(tmp_path.iterdir()) == []

    meta = prepare_corpus(
        tmp_path, url="https://example.invalid/input.txt", md5=hashlib.md5(body).hexdigest()
    )
    assert (tmp_path / "input.txt").read_bytes() == body and meta["source_chars"] == len(body)


def test_empty_text_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        prepare_corpus(tmp_path / "d", path=empty)


def test_text_shorter_than_a_window_is_refused(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.\n" * 3)
    dm = TextDataModule(tmp_path / "d", path=short, block_size=32, batch_size=2)
    dm.prepare_data()
    with pytest.raises(
        ValueError, match=r"val split .* fewer than block_size \+ 1 = 33.*smaller model.block_size"
    ):
        dm.setup("fit")


@pytest.mark.parametrize("name", ["batch_size", "block_size"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes_are_refused(tmp_path, name, value):
    with pytest.raises(ValueError, match=rf"data.{name} must be a positive integer, got {value}"):
        TextDataModule(tmp_path, **{name: value})
