import hashlib
import io
import json
import os
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
    prepare_corpus,
    tokenizer_from_meta,
)

from .conftest import make_text


def test_tiny_shakespeare_prepares_to_nanogpts_split(shakespeare_path, tmp_path):
    meta = prepare_corpus(tmp_path, path=shakespeare_path)
    assert meta["source_chars"] == 1_115_394
    assert meta["tokenizer"]["vocab_size"] == 65
    assert (meta["train_tokens"], meta["val_tokens"]) == (1_003_854, 111_540)
    assert (tmp_path / "train.bin").stat().st_size == 1_003_854 * 2
    train = np.memmap(tmp_path / "train.bin", dtype=np.uint16, mode="r")
    tok = tokenizer_from_meta(json.loads((tmp_path / "meta.json").read_text())["tokenizer"])
    assert tok.decode(train[:14].tolist()) == "First Citizen:"


def test_prepare_runs_once_and_again_when_the_text_changes(tmp_path, text_path):
    data_dir = tmp_path / "d"
    prepare_corpus(data_dir, path=text_path)
    stamp = (data_dir / "train.bin").stat().st_mtime_ns
    prepare_corpus(data_dir, path=text_path)
    assert (data_dir / "train.bin").stat().st_mtime_ns == stamp

    other = tmp_path / "other.txt"
    other.write_text(make_text(seed=1) + "zebra\n")
    meta = prepare_corpus(data_dir, path=other)
    assert "z" in meta["tokenizer"]["vocab"]
    assert meta["source_md5"] == hashlib.md5(other.read_bytes()).hexdigest()


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


def test_gpt2_data_prepares(tmp_path, text_path):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    meta = prepare_corpus(tmp_path, path=text_path, tokenizer="gpt2")
    assert meta["tokenizer"] == {"kind": "gpt2", "vocab_size": 50257}
    assert 0 < meta["train_tokens"] < meta["train_chars"]


@pytest.fixture
def prepared(tmp_path, text_path) -> Path:
    prepare_corpus(tmp_path, path=text_path)
    return tmp_path


def take(it, n):
    return [next(it) for _ in range(n)]


def test_windows_are_memmap_slices_and_y_is_x_shifted_by_one(prepared):
    data = np.memmap(prepared / "train.bin", dtype=np.uint16, mode="r")
    for x, y in take(iter(TrainWindows(prepared / "train.bin", 16, 4, seed=0)), 3):
        assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
        torch.testing.assert_close(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y, strict=True):
            starts = [i for i in range(len(data) - 16) if (data[i : i + 16] == row_x.numpy()).all()]
            assert any((data[s + 1 : s + 17] == row_y.numpy()).all() for s in starts)


def test_train_windows_differ_across_ranks_and_workers(prepared):
    path = prepared / "train.bin"
    rank0 = take(iter(TrainWindows(path, 16, 4, seed=7, rank=0)), 20)
    rank1 = take(iter(TrainWindows(path, 16, 4, seed=7, rank=1)), 20)
    assert not any(torch.equal(a[0], b[0]) for a in rank0 for b in rank1)

    # two workers take alternate batches of one stream: no repeats, same stream as one process
    loader = DataLoader(TrainWindows(path, 16, 4, seed=7, rank=0), batch_size=None, num_workers=2)
    workers = take(iter(loader), 20)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(workers, rank0, strict=True))
    assert len({tuple(x.flatten().tolist()) for x, _ in workers}) == 20


def test_train_stream_resumes_at_a_batch_index(prepared):
    path = prepared / "train.bin"
    full = take(iter(TrainWindows(path, 16, 4, seed=3)), 10)
    resumed = take(iter(TrainWindows(path, 16, 4, seed=3, start_batch=6)), 4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[6:], resumed, strict=True))


def test_val_batches_are_deterministic_and_split_across_ranks(prepared):
    path = prepared / "val.bin"
    a = list(EvalWindows(path, 16, 4, num_batches=6))
    b = list(EvalWindows(path, 16, 4, num_batches=6))
    assert len(a) == 6 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))
    r0 = list(EvalWindows(path, 16, 4, num_batches=6, rank=0, world_size=2))
    r1 = list(EvalWindows(path, 16, 4, num_batches=6, rank=1, world_size=2))
    assert [x[0] for x in r0 + r1] and len(r0) == len(r1) == 3
    assert all(torch.equal(x[0], y[0]) for x, y in zip(r0 + r1, a[0::2] + a[1::2], strict=True))


def test_whole_val_split_uses_non_overlapping_windows(prepared):
    data = np.memmap(prepared / "val.bin", dtype=np.uint16, mode="r")
    ys = torch.cat([y for _, y in EvalWindows(prepared / "val.bin", 16, 4, num_batches=None)])
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
