import dataclasses
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict
from torchmetrics.text import CHRFScore, SacreBLEUScore

from nanogpt import CONFIG_DIR
from nanogpt.data import CharTokenizer, CorpusConfig, find_corpus
from nanogpt.evaluate import evaluate
from nanogpt.metrics.bleu import BleuSettings, bleu_prompts, corpus_bleu, evaluate_bleu
from nanogpt.metrics.chrf import corpus_chrf, sentence_chrf
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.training.callbacks.bleu import BleuCallback
from nanogpt.training.job import train

from .helpers import LINES, column, read_metrics


def test_bleu_is_100_for_identical_text_and_low_for_shuffled_words():
    refs = LINES
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(line.split(), len(line.split()))) for line in refs]
    assert corpus_bleu(shuffled, refs) < 30.0
    assert corpus_bleu(["zzz qqq"] * len(refs), refs) == 0.0
    # partial matches score as sacrebleu itself scores them, smoothed (its default) or not
    halves = [" ".join(line.split()[: len(line.split()) // 2 + 1]) for line in refs]
    expected = sacrebleu.corpus_bleu(halves, [refs], tokenize="13a", smooth_method="exp").score
    assert corpus_bleu(halves, refs) == pytest.approx(expected, abs=1e-9)
    assert 0.0 < expected < 100.0
    plain = sacrebleu.corpus_bleu(halves, [refs], tokenize="13a", smooth_method="none").score
    assert corpus_bleu(halves, refs, smooth=False) == pytest.approx(plain, abs=1e-9)


def test_smoothed_bleu_credits_matching_words_before_any_4_word_match():
    # words of the references, but never two in their order: no 2-, 3- or 4-gram matches
    refs = LINES
    words = [" ".join(reversed(line.split())) for line in refs]
    assert corpus_bleu(words, refs, smooth=False) == 0.0
    smoothed = corpus_bleu(words, refs)
    assert smoothed == pytest.approx(sacrebleu.corpus_bleu(words, [refs]).score, abs=1e-9)
    assert 0.0 < smoothed < corpus_bleu(refs, refs)
    # with n_gram=1, BLEU is the clipped word precision, so smoothing has nothing to do
    assert corpus_bleu(words, refs, n_gram=1) == corpus_bleu(words, refs, n_gram=1, smooth=False) > 0


def test_torchmetrics_still_disagrees_with_sacrebleu_where_the_recipe_needs_it():
    """Why the recipe calls sacrebleu, not torchmetrics; if this fails, torchmetrics could serve again."""
    refs = LINES
    words = [" ".join(reversed(line.split())) for line in refs]
    # smooth=True returns 0 as soon as one n-gram order has no match, before smoothing anything
    assert SacreBLEUScore(n_gram=4, tokenize="13a", smooth=True)(words, [[r] for r in refs]).item() == 0.0
    # CHRFScore keeps newlines as characters, where sacrebleu's chrF drops all whitespace
    text = ["All:\nSpeak,\nspeak.", "ROMEO:\nBut,\nsoft!"]
    flat = [t.replace("\n", " ") for t in text]
    torchmetrics_chrf = CHRFScore(n_char_order=6, n_word_order=0, beta=2.0)
    assert corpus_chrf(text, flat) == pytest.approx(100.0)
    assert 100.0 * torchmetrics_chrf(text, [[f] for f in flat]).item() < 99.0


def test_chrf_is_sacrebleus_chrf2_and_credits_partly_right_words():
    refs = LINES
    assert corpus_chrf(refs, refs) == pytest.approx(100.0)
    assert corpus_chrf(["### ~~~"] * len(refs), refs) == 0.0  # no character in common
    rng = random.Random(0)
    typos = ["".join(c for c in line if rng.random() > 0.2) for line in refs]  # a fifth of the letters gone
    expected = sacrebleu.corpus_chrf(typos, [refs]).score  # its defaults: char order 6, word order 0, beta 2
    assert corpus_chrf(typos, refs) == pytest.approx(expected, abs=1e-9)
    assert sentence_chrf(typos[0], refs[0]) == pytest.approx(
        sacrebleu.sentence_chrf(typos[0], [refs[0]]).score, abs=1e-9
    )
    # typos break most words, which BLEU then misses, while chrF still sees most characters in order
    assert corpus_chrf(typos, refs) > 30.0 > corpus_bleu(typos, refs)


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
    result = evaluate_bleu(model, tok, tokens, settings)
    samples = result.samples
    assert len(samples) == 3 and all(len(s.continuation) == 12 for s in samples)
    assert samples[0].prompt + samples[0].reference == "abc def ghij abc def"
    continuations, references = [s.continuation for s in samples], [s.reference for s in samples]
    assert result.bleu == pytest.approx(corpus_bleu(continuations, references))
    assert result.chrf == pytest.approx(corpus_chrf(continuations, references))
    assert [s.chrf for s in samples] == [sentence_chrf(s.continuation, s.reference) for s in samples]
    assert "tok:13a|smooth:exp" in result.bleu_signature and "nc:6|nw:0" in result.chrf_signature
    plain = evaluate_bleu(model, tok, tokens, dataclasses.replace(settings, smooth=False))
    assert plain.bleu == pytest.approx(corpus_bleu(continuations, references, smooth=False))
    assert "smooth:none" in plain.bleu_signature
    assert evaluate_bleu(model, tok, tokens, settings).samples == samples  # greedy: the same every time


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_prompts": 0}, "num_prompts must be a positive integer"),
        ({"temperature": -1.0}, "temperature must be > 0, or 0 for greedy"),
        ({"every_n_evals": 0}, "every_n_evals must be a positive integer"),
        ({"smooth": "exp"}, "smooth must be true or false"),
    ],
)
def test_bad_bleu_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BleuCallback(**kwargs)


def test_a_tiny_run_logs_bleu_bpc_and_samples_to_csv_and_tensorboard(trained_run):
    # the shared run: BLEU on 4 prompts of 16 characters, 24-character continuations, every second
    # validation (callbacks.bleu.every_n_evals=2)
    run, cfg = trained_run.path, trained_run.cfg
    rows = read_metrics(run)

    bleu, chrf = column(rows, "val/bleu"), column(rows, "val/chrf")
    # the 1st and 3rd of 4 evaluations (steps as metrics.csv counts them: optimizer steps taken)
    assert [s for s, _ in bleu] == [s for s, _ in chrf] == [10, 30]

    meta = find_corpus(CorpusConfig.from_data(cfg.data)).meta
    loss, bpc = dict(column(rows, "val/loss")), dict(column(rows, "val/bpc"))
    assert set(bpc) == {10, 20, 30, 40}
    # a char model has one token per character, so its bits per character are its loss in bits
    assert meta.val_tokens == meta.val_chars
    assert bpc[40] == pytest.approx(loss[40] / np.log(2), rel=1e-4)
    assert trained_run.metrics["val/bpc"] == pytest.approx(bpc[40], rel=1e-4)

    samples = [json.loads(line) for line in (run / "csv" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8 and {s["step"] for s in samples} == {10, 30}  # optimizer steps taken
    assert set(samples[0]) == {"step", "prompt", "reference", "continuation", "chrf"}
    assert all(len(s["prompt"]) == 16 and len(s["continuation"]) == 24 for s in samples)
    # the logged scores are those of the logged samples, by sacrebleu's own implementation
    for (step, b), (_, c) in zip(bleu, chrf, strict=True):
        assert_sacrebleu_scores([s for s in samples if s["step"] == step], b, c)

    (events,) = (run / "tensorboard").glob("events.out.tfevents.*")
    assert b"val/samples" in events.read_bytes()


def assert_sacrebleu_scores(samples: list[dict], bleu: float, chrf: float) -> None:
    """``bleu`` and ``chrf`` are sacrebleu's scores of ``samples`` with its defaults (13a, exp, chrF2)."""
    continuations, references = [s["continuation"] for s in samples], [s["reference"] for s in samples]
    expected_bleu = sacrebleu.corpus_bleu(continuations, [references], tokenize="13a", smooth_method="exp")
    assert bleu == pytest.approx(expected_bleu.score, abs=1e-4)
    expected_chrf = sacrebleu.corpus_chrf(continuations, [references], char_order=6, word_order=0, beta=2)
    assert chrf == pytest.approx(expected_chrf.score, abs=1e-4)
    for s in samples:
        assert s["chrf"] == pytest.approx(sacrebleu.sentence_chrf(s["continuation"], [s["reference"]]).score)


def test_bleu_and_chrf_rise_as_a_tiny_model_learns_the_fixture_text(cfg_tiny):
    # 100 steps at lr 1e-2 take the fixture text's val loss from 3.9 to 1.3-1.55: the model spells
    # some words by then. Measured over 11 seeds: the first validation (step 25) scored BLEU 0.00-0.27
    # and chrF 3.0-8.4, the last (step 100) BLEU 0.40-2.07 and chrF 10.8-16.0, and an untrained model
    # of this shape BLEU 0.03 and chrF 0.7; the margins below are about half the smallest seen.
    with open_dict(cfg_tiny):
        cfg_tiny.trainer.max_steps = 100
        cfg_tiny.trainer.val_check_interval = 25
        cfg_tiny.optimizer.lr = 1e-2
        cfg_tiny.data.batch_size = 32
    train(cfg_tiny)
    run = Path(cfg_tiny.paths.output_dir)
    rows = read_metrics(run)
    bleu, chrf = column(rows, "val/bleu"), column(rows, "val/chrf")
    assert [s for s, _ in bleu] == [s for s, _ in chrf] == [25, 50, 75, 100]
    assert bleu[-1][1] > bleu[0][1] and chrf[-1][1] > chrf[0][1] + 3.0

    # the same recipe on an untrained model of the same shape
    model, tokenizer, _ = load_checkpoint(run / "checkpoints" / "last.ckpt", "cpu")
    torch.manual_seed(0)
    untrained = evaluate_bleu(
        GPT(model.config),
        tokenizer,
        find_corpus(CorpusConfig.from_data(cfg_tiny.data)).tokens("val"),
        BleuSettings(),
    )
    assert bleu[-1][1] > untrained.bleu + 0.2 and chrf[-1][1] > untrained.chrf + 5.0

    # the last validation's scores are sacrebleu's, on scores well above 0
    samples = [json.loads(line) for line in (run / "csv" / "samples.jsonl").read_text().splitlines()]
    last = [s for s in samples if s["step"] == 100]
    assert len(last) == BleuSettings().num_prompts and bleu[-1][1] > 0
    assert_sacrebleu_scores(last, bleu[-1][1], chrf[-1][1])

    # nanogpt-eval scores that checkpoint with the same recipe, composed from the same config: the
    # val/bleu and val/chrf the run logged at its last step
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose("eval", [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "device=cpu"])
    assert BleuSettings(**eval_cfg.bleu) == instantiate(cfg_tiny.callbacks.bleu).settings
    with open_dict(eval_cfg):
        eval_cfg.data = cfg_tiny.data
    scores = evaluate(eval_cfg, out=io.StringIO())
    assert (scores["bleu"], scores["chrf"]) == pytest.approx((bleu[-1][1], chrf[-1][1]), abs=1e-4)
