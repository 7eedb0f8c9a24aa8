import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from nanogpt import CONFIG_DIR
from nanogpt.cli.evaluate import refuse_unread_overrides
from nanogpt.data import CharTokenizer, GPT2Tokenizer
from nanogpt.devices import inference_device
from nanogpt.evaluate import evaluate
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.sample import encode_prompt, read_prompt, sample

from .helpers import run_cli

TINY_BLEU = ["bleu.num_prompts=4", "bleu.prompt_tokens=16", "bleu.continuation_tokens=16"]


@pytest.fixture(scope="module")
def run_dir(trained_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared tiny run beside its prepared text (``data.path=null`` reads
    ``data/input.txt``): nanogpt-eval writes ``best.eval.json`` beside the checkpoint it scores."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(trained_run.path.parent / "data", root / "data")
    shutil.copytree(trained_run.path, root / "run", ignore=shutil.ignore_patterns("wandb", "tensorboard"))
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
    # the run's headline (its final validation) is this very number: best.ckpt on the whole val split
    record = json.loads((run_dir / "result.json").read_text())
    assert record["final_val_loss"] == pytest.approx(result["loss"], rel=1e-6)
    assert record["final_val_tokens"] == saved["val_tokens_scored"]
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


def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine as a CPU-only build of torch sees it, whatever the machine running the test has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)


@pytest.mark.parametrize(
    "device, message",
    [
        (
            "cuda",
            r"device=cuda, but this torch has no CUDA \(a CPU-only build\); pass device=cpu or device=auto",
        ),
        ("cuda:1", r"device=cuda:1, but this torch has no CUDA"),
        ("gpu", r"device=gpu is not a device torch knows; pass device=auto, cpu or cuda"),
    ],
)
def test_sample_and_eval_refuse_a_device_this_machine_lacks(run_dir, monkeypatch, device, message):
    no_cuda(monkeypatch)
    with pytest.raises(ValueError, match=message):
        sample(sample_cfg(run_dir, "prompt=All:", f"device={device}"), out=io.StringIO())
    with pytest.raises(ValueError, match=message):
        evaluate(eval_cfg(run_dir, f"device={device}"), out=io.StringIO())
    assert inference_device("auto") == "cpu"


def test_a_cuda_device_past_the_last_one_is_refused_with_those_there_are(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ValueError, match=r"device=cuda:2, but this machine has 2 CUDA devices; pass device=one of"
    ):
        inference_device("cuda:2")
    assert inference_device("cuda:1") == "cuda:1" and inference_device("auto") == "cuda"


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("ckpt_path=null", FileNotFoundError, r"no checkpoint given; pass ckpt_path="),
        ("ckpt_path=/no/such.ckpt", FileNotFoundError, r"ckpt_path=/no/such.ckpt does not exist; pass"),
        ("batch_size=0", ValueError, r"batch_size must be a positive integer, got 0; set batch_size="),
        ("batch_size=-3", ValueError, r"batch_size must be a positive integer, got -3"),
        ("batch_size=many", ValueError, r"batch_size must be a positive integer, got 'many'"),
        ("bleu.num_prompts=0", ValueError, r"bleu.num_prompts must be a positive integer"),
        ("data.path=/no/such.txt", FileNotFoundError, r"no text file at /no/such.txt \(from data.path\)"),
    ],
)
def test_eval_user_errors_name_the_fix(run_dir, tmp_path, override, error, message):
    # each is a ValueError or OSError, which the console script prints in one line (nanogpt.cli.errors)
    with pytest.raises(error, match=message):
        evaluate(eval_cfg(run_dir, f"data.data_dir={tmp_path}", override), out=io.StringIO())


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.block_size=4096", r"does not read model.block_size \(the windows are the checkpoint's own"),
        ("data.batch_size=8", r"does not read data.batch_size \(windows per forward pass are batch_size\)"),
        ("seed=3", r"does not read seed \(.*BLEU sampling uses bleu.seed\)"),
        ("+temperature=0.5", r"\+temperature=0.5: nanogpt-eval does not read temperature; drop it"),
    ],
)
def test_eval_refuses_an_override_it_does_not_read(override, message):
    with pytest.raises(
        ValueError, match=message + r".*The keys it reads: ckpt_path, batch_size, device, data"
    ):
        refuse_unread_overrides([override])


def test_eval_takes_every_override_it_reads():
    refuse_unread_overrides(
        [
            "data=shakespeare_gpt2",
            "data.path=/x.txt",
            "+data.val_fraction=0.2",
            "bleu.n_gram=2",
            "paths.root_dir=/tmp",
            "ckpt_path=/x.ckpt",
            "batch_size=8",
            "device=cpu",
            "hydra.run.dir=.",
            "hydra/job_logging=disabled",
        ]
    )


def test_cli_eval_refuses_an_override_it_does_not_read_in_one_line(run_dir, tmp_path):
    # issue 21: model.block_size=4096 was silently ignored (the check reads Hydra's overrides, so it
    # runs in the console script; sample's device=cuda is a ValueError like any other, printed in one
    # line by the same wrapper: test_sample_and_eval_refuse_a_device_this_machine_lacks)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    result = run_cli("nanogpt-eval", [f"ckpt_path={ckpt}", "model.block_size=4096"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.startswith("ValueError: model.block_size=4096: nanogpt-eval does not read")
    assert len(result.stderr.splitlines()) == 2  # the message, and where the traceback is
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR=1" in result.stderr
    assert list(tmp_path.iterdir()) == []
