"""Any corpus through ``data=text``: files, folders, globs, datasets' local builders, save_to_disk folders
and the Hub (issue 12); each bad input gets a clear error. No network: every corpus is made here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from nanogpt.data import CharTokenizer, GPT2Tokenizer, TextDataModule
from nanogpt.data import sources as sources_module
from nanogpt.data.prepare import read_meta
from nanogpt.data.sources import find_source, prepare_source
from nanogpt.train import train

from .conftest import TINY, compose_train, make_text

datasets = pytest.importorskip("datasets")


def tokens(meta: dict, split: str) -> list[int]:
    return np.fromfile(Path(meta["corpus_dir"]) / f"{split}.bin", dtype=meta["dtype"]).tolist()


def both_splits(meta: dict) -> list[int]:
    return tokens(meta, "train") + tokens(meta, "val")


@pytest.fixture
def two_files(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text(make_text(300, seed=1))
    (folder / "more" / "b.md").write_text(make_text(300, seed=2))
    (folder / "notes.bin").write_bytes(b"\x00\xff not text")  # a folder gives its .txt and .md files only
    return folder


def text_cfg(tmp_path: Path, source: str, *overrides: str):
    cfg = compose_train([*TINY, "data=text", "callbacks.bleu=null", *overrides])
    with open_dict(cfg):
        cfg.data.source = source
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def test_a_folder_of_two_text_files_trains_through_data_text(tmp_path, two_files):
    metrics = train(text_cfg(tmp_path, str(two_files)))
    assert metrics["step"] == 40
    (meta_path,) = (tmp_path / "data").glob("char-*/meta.json")
    meta = read_meta(meta_path.parent)
    assert meta["documents"] == 2 and meta["source"] == f"2 text file(s) from {two_files}"
    assert metrics["val/loss"] < 0.8 * np.log(meta["tokenizer"]["vocab_size"])  # it learned something
    # each file is a document ending with a blank line, in path order; the last 10% of tokens is val
    text = (two_files / "a.txt").read_text() + "\n\n" + (two_files / "more" / "b.md").read_text() + "\n\n"
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    assert both_splits(meta) == tok.encode(text)
    assert meta["train_tokens"] == int(len(text) * 0.9)
    assert (meta["train_chars"], meta["val_chars"]) == (meta["train_tokens"], meta["val_tokens"])


def test_bpe_tokens_of_files_cut_into_pieces_are_those_of_each_whole_file(tmp_path, two_files, monkeypatch):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    monkeypatch.setattr(sources_module, "PIECE_BYTES", 512)  # some 70 pieces per file
    meta = prepare_source(tmp_path / "data", str(two_files), tokenizer="gpt2")
    tok = GPT2Tokenizer()
    a, b = (two_files / "a.txt").read_text(), (two_files / "more" / "b.md").read_text()
    assert both_splits(meta) == tok.encode(a) + [tok.eot_token] + tok.encode(b) + [tok.eot_token]
    assert meta["train_chars"] + meta["val_chars"] == len(a) + len(b)
    assert meta["val_chars"] == pytest.approx(0.1 * (len(a) + len(b)), rel=0.05)


def test_a_file_without_clean_cuts_is_still_read_in_pieces(tmp_path, monkeypatch):
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        pytest.skip("set TIKTOKEN_CACHE_DIR to a folder holding GPT-2's BPE files")
    from nanogpt.data import prepare

    # CRLF line ends: no newline sits between two non-spaces, so no cut is clean
    text = make_text(400).replace("\n", "\r\n")
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    monkeypatch.setattr(sources_module, "PIECE_BYTES", 256)
    monkeypatch.setattr(prepare, "UNCUT_LIMIT", 2048)  # held at most this long, then cut anyway
    rows = list(sources_module._file_rows([tmp_path / "crlf.txt"], cut_anywhere=False, errors="strict"))
    assert len(rows) > 5 and max(len(r["text"]) for r in rows) < 2048 + 256
    meta = prepare_source(tmp_path / "data", str(tmp_path / "crlf.txt"), tokenizer="gpt2")
    tok = GPT2Tokenizer()
    assert tok.decode(both_splits(meta)) == text + "<|endoftext|>"  # every character, in order


def test_parallel_and_sharded_tokenization_keeps_the_order(tmp_path, two_files, monkeypatch):
    monkeypatch.setattr(sources_module, "PIECE_BYTES", 64)  # some 470 rows: enough for two processes
    one = prepare_source(tmp_path / "one", str(two_files), num_proc=1)
    monkeypatch.setattr(sources_module, "SHARD_BYTES", 8192)  # and shards, each with its own workers
    two = prepare_source(tmp_path / "two", str(two_files), num_proc=2)
    assert both_splits(one) == both_splits(two)


def test_a_saved_dataset_and_a_json_lines_file_train_through_datasets(tmp_path):
    docs = [make_text(40, seed=i) for i in range(30)]
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"story": docs, "n": list(range(30))}),
            "test": datasets.Dataset.from_dict({"story": docs[:2], "n": [0, 1]}),
        }
    ).save_to_disk(str(saved))
    metrics = train(text_cfg(tmp_path / "a", f"hf:{saved}", "data.text_column=story"))
    assert metrics["step"] == 40
    (meta_path,) = (tmp_path / "a" / "data").glob("char-*/meta.json")
    meta = read_meta(meta_path.parent)
    assert meta["documents"] == 30
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    assert both_splits(meta) == tok.encode("".join(d + "\n\n" for d in docs))

    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "body": d}) + "\n" for i, d in enumerate(docs)))
    metrics = train(text_cfg(tmp_path / "b", str(jsonl), "data.text_column=body"))
    assert metrics["step"] == 40
    (meta_path,) = (tmp_path / "b" / "data").glob("char-*/meta.json")
    assert both_splits(read_meta(meta_path.parent)) == both_splits(meta)  # the same documents


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_files_go_through_datasets_builders(tmp_path, suffix):
    docs = [make_text(20, seed=i) for i in range(12)]
    path = tmp_path / f"docs{suffix}"
    table = datasets.Dataset.from_dict({"id": list(range(12)), "body": docs})
    if suffix == ".csv":
        table.to_csv(str(path), index=False)
    else:
        table.to_parquet(str(path))
    meta = prepare_source(tmp_path / "data", str(path), text_column="body")
    assert meta["documents"] == 12
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    assert both_splits(meta) == tok.encode("".join(d + "\n\n" for d in docs))


def test_the_cache_is_keyed_by_contents_column_and_tokenizer_so_a_second_run_starts_at_once(
    tmp_path, two_files, monkeypatch
):
    first = prepare_source(tmp_path / "data", str(two_files))

    def never(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(sources_module, "_build", never)
    assert prepare_source(tmp_path / "data", str(two_files)) == first  # found, not rebuilt
    monkeypatch.undo()
    (two_files / "a.txt").write_text(make_text(300, seed=3))  # another text
    second = prepare_source(tmp_path / "data", str(two_files))
    assert second["corpus_dir"] != first["corpus_dir"] and Path(first["corpus_dir"]).is_dir()
    assert both_splits(second) != both_splits(first)
    # the same files, another column: another corpus
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"a": f"x{i}" * 40, "b": f"y{i}" * 40}) + "\n" for i in range(9)))
    by_a = prepare_source(tmp_path / "data", str(jsonl), text_column="a")
    by_b = prepare_source(tmp_path / "data", str(jsonl), text_column="b")
    assert by_a["corpus_dir"] != by_b["corpus_dir"]


def test_a_saved_dataset_saved_again_with_other_rows_is_prepared_anew(tmp_path):
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": [make_text(30, seed=1)]}).save_to_disk(str(saved))
    first = prepare_source(tmp_path / "data", f"hf:{saved}")
    assert prepare_source(tmp_path / "data", f"hf:{saved}") == first
    datasets.Dataset.from_dict({"text": [make_text(30, seed=2)]}).save_to_disk(str(tmp_path / "other"))
    shutil.rmtree(saved)
    shutil.move(str(tmp_path / "other"), str(saved))  # the same folder, new contents
    second = prepare_source(tmp_path / "data", f"hf:{saved}")
    assert second["corpus_dir"] != first["corpus_dir"] and both_splits(second) != both_splits(first)


def test_other_ranks_find_the_prepared_source(tmp_path, two_files):
    with pytest.raises(FileNotFoundError, match="is not prepared"):
        find_source(tmp_path / "data", str(two_files))
    meta = prepare_source(tmp_path / "data", str(two_files))
    assert find_source(tmp_path / "data", str(two_files)) == meta
    dm = TextDataModule(tmp_path / "data", source=str(two_files), block_size=16, batch_size=2)
    assert dm.corpus_dir == Path(meta["corpus_dir"])  # without prepare_data, as DDP's other ranks


def test_a_vocabulary_beyond_uint16_is_stored_as_uint32(tmp_path):
    text = "".join(chr(0xE000 + i) for i in range(70_000))  # 70,000 distinct characters, no surrogates
    corpus = tmp_path / "wide.txt"
    corpus.write_text(text + text[:1000])
    meta = prepare_source(tmp_path / "data", str(corpus))
    assert meta["dtype"] == "uint32" and meta["tokenizer"]["vocab_size"] > 2**16
    tok = CharTokenizer(meta["tokenizer"]["vocab"])
    assert both_splits(meta) == tok.encode(text + text[:1000] + "\n\n")


def test_a_failed_preparation_leaves_nothing_that_a_later_run_would_use(tmp_path, two_files, monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a Ctrl-C after the token files, before meta.json

    monkeypatch.setattr(sources_module, "_write_splits", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_source(tmp_path / "data", str(two_files))
    assert list((tmp_path / "data").iterdir()) == []  # no folder, no temporary one
    monkeypatch.undo()
    assert prepare_source(tmp_path / "data", str(two_files))["documents"] == 2


# --- bad input ---


def test_a_source_matching_no_files_names_the_forms_that_work(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"data.source=.*nothing\*.txt matches no files; pass a text file"
    ):
        prepare_source(tmp_path / "data", str(tmp_path / "nothing*.txt"))
    (tmp_path / "a.txt").write_text("some text")
    assert "1 text file(s)" in sources_module.resolve_source(str(tmp_path / "*.txt")).description  # a glob
    (tmp_path / "b.csv").write_text("text\nmore text\n")
    with pytest.raises(ValueError, match=r"mixes kinds of files \(csv, text\)"):
        prepare_source(tmp_path / "data", str(tmp_path / "*.*"))
    (tmp_path / "c.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValueError, match=r"matches files nanogpt cannot read as text \(.pdf\)"):
        prepare_source(tmp_path / "data", str(tmp_path / "*.*"))


def test_a_file_that_is_not_utf8_is_named_with_its_byte_offset_unless_errors_replace(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(make_text(50))
    bad = corpus / "b.txt"
    bad.write_bytes("café ".encode() * 10 + b"\xff\xfe binary" + make_text(50).encode())
    with pytest.raises(
        ValueError, match=rf"{bad} is not UTF-8 text: the byte at offset 60 .*data.errors=replace"
    ):
        prepare_source(tmp_path / "data", str(corpus))
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())
    meta = prepare_source(tmp_path / "data", str(corpus), errors="replace")
    assert "\ufffd" in meta["tokenizer"]["vocab"]


def test_a_corpus_of_empty_files_says_it_holds_no_text(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("")
    with pytest.raises(ValueError, match=r"holds no text"):
        prepare_source(tmp_path / "data", str(tmp_path / "corpus"))


def test_an_unknown_tiktoken_encoding_lists_the_known_ones(tmp_path, two_files):
    with pytest.raises(ValueError, match=r"unknown tokenizer 'gpt5'; .*data.tokenizer=cl100k_base"):
        prepare_source(tmp_path / "data", str(two_files), tokenizer="gpt5")


def test_a_missing_column_lists_the_columns(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text('{"title": "a", "body": "some text"}\n')
    with pytest.raises(
        ValueError, match=r"has no column 'text'; its columns are title, body.*data.text_column="
    ):
        prepare_source(tmp_path / "data", str(jsonl))


def test_a_saved_dataset_without_the_split_lists_its_splits(tmp_path):
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["abc"]})}).save_to_disk(str(saved))
    with pytest.raises(ValueError, match=r"has no split 'validation'; pass one of data.split=train"):
        prepare_source(tmp_path / "data", f"hf:{saved}", split="validation")


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
        prepare_source(tmp_path / "data", "hf:nobody/nothing")


def test_a_corpus_too_small_for_one_window_says_which_block_size_fits(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("to be or not to be\n" * 5)
    dm = TextDataModule(tmp_path / "data", source=str(corpus), block_size=64, batch_size=2)
    dm.prepare_data()
    with pytest.raises(ValueError, match=r"block_size"):
        dm.setup("fit")
