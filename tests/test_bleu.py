import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from omegaconf import open_dict

from nanogpt.data import CharTokenizer
from nanogpt.metrics.bleu import BleuSettings, bleu_prompts, corpus_bleu, evaluate_bleu
from nanogpt.metrics.bleu_callback import BleuCallback
from nanogpt.model import GPT, GPTConfig
from nanogpt.train import train

from .conftest import LINES, TINY, compose_train
from .test_train import column, read_metrics

BLEU_TINY = [
    "callbacks.bleu.num_prompts=4",
    "callbacks.bleu.prompt_tokens=16",
    "callbacks.bleu.continuation_tokens=24",
]


def test_bleu_is_100_for_identical_text_and_low_for_shuffled_words():
    refs = LINES
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(line.split(), len(line.split()))) for line in refs]
    assert corpus_bleu(shuffled, refs) < 30.0
    assert corpus_bleu(["zzz qqq"] * len(refs), refs) == 0.0
    # partial matches score as sacrebleu itself scores them
    halves = [" ".join(line.split()[: len(line.split()) // 2 + 1]) for line in refs]
    expected = sacrebleu.corpus_bleu(halves, [refs], tokenize="13a").score
    assert corpus_bleu(halves, refs) == pytest.approx(expected, abs=1e-3)
    assert 0.0 < expected < 100.0


def test_prompts_sit_at_fixed_evenly_spaced_positions():
    tokens = np.arange(1000, dtype=np.uint16)
    prompts, refs = bleu_prompts(tokens, BleuSettings(num_prompts=3, prompt_tokens=5, continuation_tokens=10))
    assert prompts[:, 0].tolist() == [0, 492, 985]  # first, middle, and the last window that fits
    assert torch.equal(refs[:, 0], prompts[:, -1] + 1)
    assert refs.shape == (3, 10)


def test_greedy_continuations_are_decoded_and_scored_against_the_true_text():
    tok = CharTokenizer(sorted(set(" abcdefghij")))
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=tok.vocab_size, n_layer=1, n_head=1, n_embd=8))
    tokens = np.array(tok.encode("abc def ghij " * 40), dtype=np.uint16)
    settings = BleuSettings(num_prompts=3, prompt_tokens=8, continuation_tokens=12)
    score, samples = evaluate_bleu(model, tok, tokens, settings)
    assert len(samples) == 3 and all(len(s.continuation) == 12 for s in samples)
    assert samples[0].prompt + samples[0].reference == "abc def ghij abc def"
    assert score == pytest.approx(
        corpus_bleu([s.continuation for s in samples], [s.reference for s in samples])
    )
    assert evaluate_bleu(model, tok, tokens, settings)[1] == samples  # greedy: the same every time


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_prompts": 0}, "num_prompts must be a positive integer"),
        ({"temperature": -1.0}, "temperature must be > 0, or 0 for greedy"),
        ({"every_n_evals": 0}, "every_n_evals must be a positive integer"),
    ],
)
def test_bad_bleu_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BleuCallback(**kwargs)


def test_a_tiny_run_logs_bleu_bpc_and_samples_to_csv_and_tensorboard(tmp_path, text_path):
    cfg = compose_train([*TINY, *BLEU_TINY, "logger=many", "callbacks.bleu.every_n_evals=2"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.data.path = str(text_path)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    rows = read_metrics(run)

    bleu = column(rows, "val/bleu")
    assert [s for s, _ in bleu] == [19]  # every second evaluation: the 1st of 2

    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    loss, bpc = dict(column(rows, "val/loss")), dict(column(rows, "val/bpc"))
    assert set(bpc) == {19, 39}
    # a char model has one token per character, so its bits per character are its loss in bits
    assert meta["val_tokens"] == meta["val_chars"]
    assert bpc[39] == pytest.approx(loss[39] / np.log(2), rel=1e-4)
    assert metrics["val/bpc"] == pytest.approx(bpc[39], rel=1e-4)

    samples = [json.loads(line) for line in (run / "csv" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["step"] for s in samples} == {20}  # optimizer steps taken
    assert set(samples[0]) == {"step", "prompt", "reference", "continuation"}
    assert all(len(s["prompt"]) == 16 and len(s["continuation"]) == 24 for s in samples)
    # the logged score is the BLEU of the logged samples, by sacrebleu's own implementation
    reference = sacrebleu.corpus_bleu(
        [s["continuation"] for s in samples], [[s["reference"] for s in samples]], tokenize="13a"
    )
    assert bleu[0][1] == pytest.approx(reference.score, abs=1e-3)

    (events,) = (run / "tensorboard").glob("events.out.tfevents.*")
    assert b"val/samples" in events.read_bytes()
