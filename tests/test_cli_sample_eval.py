import io
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from nanogpt import CONFIG_DIR
from nanogpt.checkpoint import load_checkpoint
from nanogpt.data import CharTokenizer, GPT2Tokenizer
from nanogpt.evaluate import evaluate
from nanogpt.sample import encode_prompt, read_prompt, sample
from nanogpt.train import train

from .helpers import run_cli

TINY_BLEU = ["bleu.num_prompts=4", "bleu.prompt_tokens=16", "bleu.continuation_tokens=16"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, text_path: Path) -> Path:
    """One tiny trained run, shared by this module's tests (which only read it)."""
    from .helpers import TINY, compose_train

    root = tmp_path_factory.mktemp("trained")
    (root / "data").mkdir()
    (root / "data" / "input.txt").write_text(text_path.read_text())  # data.path=null reads it there
    cfg = compose_train([*TINY, "trainer.max_steps=20", "callbacks.bleu=null"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "run")
        cfg.data.data_dir = str(root / "data")
        cfg.data.path = None
    train(cfg)
    return root / "run"


def compose_app(name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def sample_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    return compose_app(
        "sample", [f"ckpt_path={run_dir}", "num_samples=2", "max_new_tokens=40", "device=cpu", *overrides]
    )


def eval_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    data_dir = run_dir.parent / "data"
    return compose_app(
        "eval",
        [
            f"ckpt_path={run_dir}",
            f"data.data_dir={data_dir}",
            "data.path=null",
            "device=cpu",
            "batch_size=16",
            *TINY_BLEU,
            *overrides,
        ],
    )


def test_sample_streams_seeded_text_from_a_run_folder(run_dir):
    out = io.StringIO()
    texts = sample(sample_cfg(run_dir, "prompt=ROMEO:", "seed=3"), out=out)
    assert len(texts) == 2 and all(t.startswith("ROMEO:") and len(t) == len("ROMEO:") + 40 for t in texts)
    assert texts[0] != texts[1]  # one generator runs through both samples
    assert out.getvalue() == f"{texts[0]}\n\n---------------\n{texts[1]}\n"
    assert sample(sample_cfg(run_dir, "prompt=ROMEO:", "seed=3"), out=io.StringIO()) == texts
    assert sample(sample_cfg(run_dir, "prompt=ROMEO:", "seed=4"), out=io.StringIO()) != texts


def test_sample_with_top_p_greedy_and_a_prompt_file(run_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("JULIET: O Romeo")
    greedy = sample(
        sample_cfg(run_dir, f"prompt=FILE:{prompt}", "temperature=0", "top_k=null"), io.StringIO()
    )
    assert greedy[0] == greedy[1] and greedy[0].startswith("JULIET: O Romeo")
    nucleus = sample(sample_cfg(run_dir, "prompt=All:", "top_p=0.9", "top_k=null"), io.StringIO())
    assert all(t.startswith("All:") for t in nucleus)


def test_an_empty_prompt_starts_from_a_newline_and_says_so(run_dir, capsys):
    texts = sample(sample_cfg(run_dir, "prompt=''"), out=io.StringIO())
    assert texts[0].startswith("\n")
    assert "empty prompt: starting from a newline" in capsys.readouterr().err


def test_a_prompt_outside_the_char_vocabulary_names_the_characters(run_dir):
    with pytest.raises(
        ValueError, match=r"prompt cannot be encoded: characters \['#', '1', 'Z'\] are not in"
    ):
        sample(sample_cfg(run_dir, "prompt='Zed #1'"), out=io.StringIO())


@pytest.mark.parametrize(
    "override,message",
    [
        ("temperature=-1", "temperature must be > 0, or 0 for greedy decoding; got temperature=-1"),
        ("top_k=0", "top_k must be an integer >= 1"),
        ("top_p=1.2", r"top_p must be in \(0, 1\]"),
        ("top_p=0", r"top_p must be in \(0, 1\]"),
        ("max_new_tokens=0", r"max_new_tokens must be a positive integer, got 0"),
        ("max_new_tokens=-1", r"max_new_tokens must be a positive integer, got -1"),
        ("num_samples=0", r"num_samples must be a positive integer, got 0"),
        ("num_samples=-2", r"num_samples must be a positive integer, got -2"),
    ],
)
def test_bad_sampling_options_are_refused(run_dir, override, message):
    with pytest.raises(ValueError, match=message):
        sample(sample_cfg(run_dir, "prompt=All:", override), out=io.StringIO())


def test_missing_checkpoints_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=.*nope.ckpt does not exist.*best.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError, match=r"folder without best.ckpt \(looked in .*checkpoints\)"):
        load_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint given; pass ckpt_path="):
        load_checkpoint(None)


def test_a_checkpoint_from_another_version_or_vocabulary_is_refused(run_dir, tmp_path):
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    old = tmp_path / "old.ckpt"
    torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "format": 0}}, old)
    with pytest.raises(ValueError, match=r"has checkpoint format 0, but this nanogpt reads format 1"):
        load_checkpoint(old)

    tokenizer = ckpt["hyper_parameters"]["tokenizer"]
    bigger = {**tokenizer, "vocab": [*tokenizer["vocab"], "#"], "vocab_size": tokenizer["vocab_size"] + 1}
    other = tmp_path / "other.ckpt"
    torch.save({**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "tokenizer": bigger}}, other)
    with pytest.raises(ValueError, match=r"checkpoint is from another vocabulary"):
        load_checkpoint(other)

    notckpt = tmp_path / "notes.ckpt"
    notckpt.write_text("hello")
    with pytest.raises(ValueError, match=r"is not a readable checkpoint"):
        load_checkpoint(notckpt)


def test_eval_refuses_data_with_another_vocabulary(run_dir, tmp_path):
    other_text = tmp_path / "other.txt"
    other_text.write_text("abcdefg hijk\n" * 400)
    cfg = eval_cfg(run_dir, f"data.data_dir={tmp_path / 'other'}", f"data.path={other_text}")
    with pytest.raises(
        ValueError, match=r"trained with another vocabulary.*pass the data the model was trained on"
    ):
        evaluate(cfg, out=io.StringIO())


def test_eval_prints_a_table_and_writes_json_beside_the_checkpoint(run_dir):
    out = io.StringIO()
    result = evaluate(eval_cfg(run_dir), out=out)
    table = out.getvalue()
    for name in ("loss", "perplexity", "bits/char", "BLEU", "chrF"):
        assert name in table
    saved = json.loads((run_dir / "checkpoints" / "best.eval.json").read_text())
    assert saved["loss"] == pytest.approx(result["loss"]) and saved["bleu"] == pytest.approx(result["bleu"])
    assert saved["chrf"] == pytest.approx(result["chrf"]) and f"{saved['chrf']:.2f}" in table
    # the shared recipe (configs/bleu/default.yaml) with this command's overrides on top
    recipe = saved["bleu_recipe"]
    assert (recipe["num_prompts"], recipe["n_gram"], recipe["tokenize"]) == (4, 4, "13a")
    assert (recipe["smooth"], recipe["smooth_method"]) == (True, "exp")
    # sacrebleu's signatures: BLEU with 13a tokens and exp smoothing, chrF2 on characters only
    assert "|tok:13a|smooth:exp|" in saved["bleu_signature"]
    assert "|nc:6|nw:0|space:no|" in saved["chrf_signature"]
    assert saved["ppl"] == pytest.approx(torch.tensor(result["loss"]).exp().item(), rel=1e-5)
    (meta_path,) = (run_dir.parent / "data").glob("*/meta.json")  # the one prepared text
    meta = json.loads(meta_path.read_text())
    # every window of the val split is scored once
    assert saved["val_tokens_scored"] == (meta["val_tokens"] - 1) // 32 * 32
    assert saved["bpc"] > 0

    # plain BLEU stays available; it never exceeds the smoothed score, and chrF does not depend on it
    plain = evaluate(eval_cfg(run_dir, "bleu.smooth=false"), out=io.StringIO())
    assert plain["bleu_recipe"]["smooth_method"] == "none" and "smooth:none" in plain["bleu_signature"]
    assert plain["bleu"] <= result["bleu"] and plain["chrf"] == pytest.approx(result["chrf"])


def test_cli_sample_and_eval_run_end_to_end(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    result = run_cli(
        "nanogpt-sample",
        [f"ckpt_path={ckpt}", "prompt=ROMEO:", "num_samples=1", "max_new_tokens=30", "top_k=5", "device=cpu"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 30 + 1
    result = run_cli(
        "nanogpt-eval",
        [
            f"ckpt_path={ckpt}",
            f"data.data_dir={run_dir.parent / 'data'}",
            "data.path=null",
            "device=cpu",
            *TINY_BLEU,
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bits/char" in result.stdout and "BLEU" in result.stdout and "chrF" in result.stdout
    assert list(tmp_path.iterdir()) == []  # neither CLI leaves files where it runs


def test_empty_prompts_without_a_newline_and_for_bpe_models():
    with pytest.raises(ValueError, match=r"prompt is empty and this model's vocabulary has no newline"):
        encode_prompt("", CharTokenizer(list("abc")))
    try:
        gpt2 = GPT2Tokenizer()
    except ConnectionError:
        pytest.skip("GPT-2 BPE files not available; set TIKTOKEN_CACHE_DIR")
    assert encode_prompt("", gpt2) == ([50256], "empty prompt: starting from the <|endoftext|> token")


def test_a_missing_prompt_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.txt: no file at .*pass prompt=FILE:/path"):
        read_prompt(f"FILE:{tmp_path / 'nope.txt'}")
