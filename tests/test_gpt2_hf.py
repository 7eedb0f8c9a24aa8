"""GPT-2 checkpoints of Hugging Face ``transformers``: ``model.init_from`` in, ``nanogpt-export`` out.

Everything is built in tmp folders from a small random GPT-2 (``tiny_gpt2_dir``) and tiny runs on the
fixture text; nothing is downloaded. The reference for every logit is ``transformers`` itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt.hf.export import export, is_export_file
from nanogpt.hf.gpt2 import (
    GPT2_COMPONENTS,
    apply_pretrained_shape,
    config_from_hf,
    hydra_value,
    load_pretrained,
    pretrained_shape,
)
from nanogpt.model import GPT, GPTConfig
from nanogpt.runs.checkpoint import load_checkpoint
from nanogpt.training.job import train

from .helpers import TINY, compose_train, derived, run_cli
from .helpers.hf import SAMPLE, random_gpt, write_checkpoint

transformers = pytest.importorskip("transformers")

# the tiny trainer settings, with the model group left to each run
TRAINER = [o for o in TINY if not o.startswith("model=")]


def run_cfg(overrides: list[str], text_path: Path, folder: Path) -> DictConfig:
    cfg = compose_train(TRAINER + overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder / "run")
        cfg.data.data_dir = str(folder / "data")
        cfg.data.path = str(text_path)
    return cfg


def finetune_overrides(init_from: Path) -> list[str]:
    return [
        "model=gpt2_pretrained",
        f"model.init_from={init_from}",
        "data.tokenizer=gpt2",
        "data.batch_size=4",
        # greedy BLEU continuations over GPT-2's 50257 tokens cost ~10 s per validation on 2 cores
        "callbacks.bleu=null",
    ]


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


def hf_logits(folder: Path, idx: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(idx).logits


@pytest.fixture(scope="module")
def pretrained_run(tiny_gpt2_dir, text_path, tmp_path_factory) -> dict:
    """One step at lr=0 from the tiny GPT-2: its checkpoint holds exactly the weights init_from loaded."""
    folder = tmp_path_factory.mktemp("pretrained")
    overrides = ["optimizer.lr=0", "trainer.max_steps=1", "scheduler.warmup_steps=0"]
    cfg = run_cfg([*finetune_overrides(tiny_gpt2_dir), *overrides], text_path, folder)
    return train(cfg)


@pytest.fixture(scope="module")
def finetuned_run(tiny_gpt2_dir, text_path, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("finetuned")
    overrides = [*finetune_overrides(tiny_gpt2_dir), "trainer.max_steps=20", "trainer.val_check_interval=10"]
    cfg = run_cfg(overrides, text_path, folder)
    return {"metrics": train(cfg), "cfg": cfg, "run": folder / "run"}


def test_init_from_a_folder_gives_transformers_logits(pretrained_run, tiny_gpt2_dir):
    model, tokenizer, hparams = load_checkpoint(pretrained_run["best_ckpt"])
    # the shape, the biases and GPT-2's tanh GELU all came from the checkpoint; dropout is ours
    saved = hparams["model"]
    assert (saved["n_layer"], saved["n_head"], saved["n_embd"]) == (2, 2, 32)
    assert (saved["block_size"], saved["vocab_size"], saved["gelu_approximate"]) == (64, 50257, "tanh")
    assert tokenizer.meta()["kind"] == "gpt2"
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx)[0]
    error = relative_error(ours, hf_logits(tiny_gpt2_dir, idx))
    assert error < 1e-4, error


def test_the_converter_alone_gives_transformers_logits(tiny_gpt2_dir):
    # the steps nanogpt-train takes for model.init_from, on plain dicts: shape, config, weights
    init_from = str(tiny_gpt2_dir)
    asked = {"init_from": init_from, "n_layer": None, "gelu_approximate": None, "dropout": 0.0}
    fields = apply_pretrained_shape(asked, pretrained_shape(init_from), init_from)
    assert asked["n_layer"] is None  # a copy: what it was given is left as it was
    fields.pop("init_from")
    model = GPT(GPTConfig(**fields)).eval()
    model.load_state_dict(load_pretrained(init_from))
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(idx)[0]
    error = relative_error(ours, hf_logits(tiny_gpt2_dir, idx))
    assert error < 1e-4, error


def test_a_shape_field_that_differs_from_the_checkpoints_is_refused_with_the_fix():
    shape = pretrained_shape("gpt2")
    asked = {"init_from": "gpt2", "n_layer": 12, "block_size": None, "bias": False, "dropout": 0.1}
    with pytest.raises(
        ValueError,
        match=r"\(bias=true\), but the config asks for model.bias=false; start from model=gpt2_pretrained",
    ):
        apply_pretrained_shape(asked, shape, "gpt2")
    # a value equal to the checkpoint's is no conflict; the fields it does not fix stay as given
    fields = apply_pretrained_shape({**asked, "bias": True}, shape, "gpt2")
    assert fields == {**shape, "init_from": "gpt2", "dropout": 0.1}


@pytest.mark.parametrize(
    ("init_from", "millions"), [("gpt2", 124), ("gpt2-medium", 355), ("gpt2-large", 774), ("gpt2-xl", 1558)]
)
def test_gpt2_names_have_the_shapes_of_openais_checkpoints(init_from, millions):
    # known offline, from configs/model/gpt2*.yaml; the counts are those of Hugging Face's model cards
    with torch.device("meta"):  # the shapes without the memory
        model = GPT(GPTConfig(**pretrained_shape(init_from)))
    assert round(model.num_params(non_embedding=False) / 1e6) == millions


def test_gpt2_is_the_shape_of_transformers_default_gpt2_config():
    assert pretrained_shape("gpt2") == config_from_hf(transformers.GPT2Config(), "gpt2")


def test_finetuning_the_pretrained_model_lowers_its_val_loss(pretrained_run, finetuned_run):
    # pretrained_run's val/loss is the untouched pretrained model's, on the same val windows
    history = json.loads((finetuned_run["run"] / "result.json").read_text())["history"]["val/loss"]
    losses = [v for _, v in history]
    assert losses[-1] < losses[0] < pretrained_run["val/loss"]


def test_resuming_a_finetune_takes_the_weights_from_the_checkpoint(finetuned_run, tmp_path, monkeypatch):
    def no_download(init_from):
        raise AssertionError(f"resuming loaded {init_from}'s pretrained weights again")

    monkeypatch.setattr("nanogpt.hf.gpt2.load_hf_gpt2", no_download)
    cfg = copy.deepcopy(finetuned_run["cfg"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "resumed")
        cfg.ckpt_path = str(finetuned_run["run"])
        cfg.trainer.max_steps = 24
    metrics = train(cfg)
    assert metrics["step"] == 24 and metrics["val/loss"] < finetuned_run["metrics"]["val/loss"] + 0.5


def greedy(model: torch.nn.Module, hf_folder: Path, prompt: list[int], n: int) -> tuple[list[int], list[int]]:
    idx = torch.tensor([prompt])
    ours = model.generate(idx, n, temperature=0)[0].tolist()
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    theirs = hf.generate(
        idx, attention_mask=torch.ones_like(idx), max_new_tokens=n, do_sample=False, pad_token_id=0
    )[0].tolist()
    return ours, theirs


def test_export_of_a_bpe_model_loads_in_transformers_with_its_tokenizer(finetuned_run, tmp_path):
    ckpt = finetuned_run["metrics"]["best_ckpt"]
    out = export(DictConfig({"ckpt_path": ckpt, "out_dir": str(tmp_path / "hf"), "overwrite": False}))
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt")) for name in files)  # safetensors only
    assert all(is_export_file(p) for p in out.iterdir())  # so overwrite=true may replace them
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left beside it
    assert json.loads((out / "config.json").read_text())["activation_function"] == "gelu_new"

    model, tokenizer, _ = load_checkpoint(ckpt)
    ids = tokenizer.encode(SAMPLE)
    # transformers' own GPT-2 tokenizer, from the exported files, agrees with tiktoken's
    assert transformers.AutoTokenizer.from_pretrained(out).encode(SAMPLE) == ids
    idx = torch.tensor([ids])
    with torch.no_grad():
        ours = model(idx)[0]
    error = relative_error(ours, hf_logits(out, idx))
    assert error < 1e-4, error
    ours, theirs = greedy(model, out, ids[:8], 24)
    assert ours == theirs


@pytest.fixture(scope="module")
def char_run(text_path, tmp_path_factory) -> dict:
    """A char model with no biases, untied embeddings and a vocabulary padded past the tokenizer's."""
    folder = tmp_path_factory.mktemp("char")
    overrides = [
        "model=gpt_tiny",
        "model.bias=false",
        "model.tie_weights=false",
        "model.vocab_size=64",
        "trainer.max_steps=20",
        "callbacks.bleu=null",
    ]
    return train(run_cfg(overrides, text_path, folder))


def test_export_of_a_char_model_without_biases_keeps_its_logits(char_run, tmp_path):
    out = export(DictConfig({"ckpt_path": char_run["best_ckpt"], "out_dir": str(tmp_path / "hf")}))
    model, tokenizer, _ = load_checkpoint(char_run["best_ckpt"])
    assert model.config.vocab_size == 64 and tokenizer.vocab_size < 64
    config = json.loads((out / "config.json").read_text())
    # the padding rows are cut, so the folder's vocabulary is its tokenizer's
    assert config["vocab_size"] == tokenizer.vocab_size and config["activation_function"] == "gelu"
    assert config["tie_word_embeddings"] is False
    vocab = json.loads((out / "nanogpt_tokenizer.json").read_text())["vocab"]
    assert vocab == tokenizer.vocab
    assert "character vocabulary" in (out / "README.md").read_text()
    assert all(is_export_file(p) for p in out.iterdir())  # so overwrite=true may replace them

    ids = [vocab.index(ch) for ch in SAMPLE[:32]]
    idx = torch.tensor([ids])
    with torch.no_grad():
        ours = model(idx)[0][..., : tokenizer.vocab_size]
    error = relative_error(ours, hf_logits(out, idx))
    assert error < 1e-4, error
    ours, theirs = greedy(model, out, ids[:6], 20)
    assert ours == theirs


def test_export_refuses_a_folder_with_files_and_leaves_no_half_written_one(char_run, tmp_path, monkeypatch):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    cfg = DictConfig({"ckpt_path": char_run["best_ckpt"], "out_dir": str(out), "overwrite": False})
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(cfg)
    # overwrite=true replaces only an earlier export: the folder names the file it would delete
    cfg.overwrite = True
    with pytest.raises(FileExistsError, match=r"holds files that no export wrote \(notes.txt\); pass a new"):
        export(cfg)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    (out / "notes.txt").unlink()
    export(cfg)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    cfg.overwrite = False
    with pytest.raises(FileExistsError, match=r"already holds an export; .*or overwrite=true"):
        export(cfg)

    # a failure halfway through overwrite=true keeps the old folder and leaves no temporary one
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nanogpt.hf.export.write_folder", fail)
    cfg.overwrite = True
    with pytest.raises(OSError, match="disk full"):
        export(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first

    monkeypatch.undo()
    (out / "config.json").write_text("{}")  # an earlier export, changed since: replaced as a whole
    export(cfg)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "target, match",
    [
        ("{run}", r"out_dir=.*/run is a run folder, which an export must not replace; pass a new out_dir"),
        ("{run}/checkpoints", r"holds a checkpoint \((best|last).ckpt\).*pass a new out_dir"),
        ("{run}/checkpoints/hf", r"is inside .*/run/checkpoints, a run's checkpoints; pass a new out_dir"),
        ("{run}/..", r"holds a run's record \(run/result.json\).*pass a new out_dir"),
    ],
)
def test_export_never_writes_into_a_run_or_its_checkpoints(char_run, target, match):
    # issue 21: out_dir=<the run folder> overwrite=true deleted the run, the exported checkpoint included
    run = Path(char_run["best_ckpt"]).parent.parent
    before = listing(run.parent)
    out_dir = target.format(run=run)
    with pytest.raises(FileExistsError, match=match):
        export(DictConfig({"ckpt_path": char_run["best_ckpt"], "out_dir": out_dir, "overwrite": True}))
    assert listing(run.parent) == before


def test_cli_export_refuses_the_run_folder_in_one_line(char_run, tmp_path):
    run = Path(char_run["best_ckpt"]).parent.parent
    before = listing(run)
    result = run_cli("nanogpt-export", [f"ckpt_path={run}", f"out_dir={run}", "overwrite=true"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.startswith(f"FileExistsError: out_dir={run} is a run folder")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2  # and the HYDRA hint
    assert listing(run) == before


@pytest.mark.parametrize(
    "override, error, match",
    [
        ({"model.init_from": "gpt3"}, ValueError, r"init_from='gpt3'.*model.init_from=gpt2-medium.*folder"),
        (
            {"model.n_layer": 4},
            ValueError,
            r"n_layer=12\), but the config asks for model.n_layer=4; start from",
        ),
        ({"data.tokenizer": "char"}, ValueError, r"read GPT-2 BPE tokens.*data.tokenizer=gpt2"),
        ({"model.init_from": "./no/such/folder"}, FileNotFoundError, r"no folder there.*save_pretrained"),
        # a valid override of model=gpt2_pretrained, refused: GPT-2's weights have no rotary heads
        (
            {"model.position": "rope"},
            ValueError,
            r"GPT-2's weights, which have no place for model.position=rope; pass .*model.position=learned",
        ),
    ],
)
def test_bad_init_from_fails_before_any_work_with_the_fix(override, error, match, text_path, tmp_path):
    # model.init_from=gpt2 needs no download to be checked: its shape is known
    values = {"model.init_from": "gpt2", "data.tokenizer": "gpt2", **override}
    cfg = run_cfg(["model=gpt2_pretrained", *(f"{k}={v}" for k, v in values.items())], text_path, tmp_path)
    with pytest.raises(error, match=match):
        train(cfg)
    assert not (tmp_path / "data").exists()  # it failed before preparing the data


NON_GPT2 = dict(
    position="rope",
    norm="rmsnorm",
    norm_gain=False,
    qk_norm=True,
    mlp="swiglu",
    n_kv_head=2,
    logit_softcap=15.0,
)


@pytest.mark.parametrize("name", list(NON_GPT2))
def test_init_from_refuses_each_component_gpt2s_weights_have_no_place_for(name):
    assert set(NON_GPT2) == set(GPT2_COMPONENTS)  # every component GPT-2 lacks is tried
    asked = {"init_from": "gpt2", "n_head": None, name: NON_GPT2[name]}
    value, gpt2 = hydra_value(NON_GPT2[name]), hydra_value(GPT2_COMPONENTS[name])
    with pytest.raises(ValueError) as raised:
        apply_pretrained_shape(asked, pretrained_shape("gpt2"), "gpt2")
    message = str(raised.value)
    assert f"no place for model.{name}={value}; pass GPT-2's model.{name}={gpt2}, or train" in message
    assert "\n" not in message


def test_init_from_takes_gpt2s_components_spelled_out():
    # model=gpt2_pretrained lists them with GPT-2's values; n_kv_head equal to the checkpoint's
    # n_head (12) is plain multi-head attention
    asked = {"init_from": "gpt2", **GPT2_COMPONENTS, "n_kv_head": 12}
    fields = apply_pretrained_shape(asked, pretrained_shape("gpt2"), "gpt2")
    GPTConfig(**{k: v for k, v in fields.items() if k != "init_from"})


def test_export_refuses_what_gpt2s_format_has_no_place_for_before_writing(tmp_path):
    model = random_gpt(position="learned", qk_norm=True, n_kv_head=2, logit_softcap=15.0)
    ckpt = write_checkpoint(model, tmp_path / "model.ckpt")
    out = tmp_path / "exports" / "hf"
    with pytest.raises(ValueError) as raised:
        export(DictConfig({"ckpt_path": str(ckpt), "out_dir": str(out)}))
    message = str(raised.value)
    assert "model.qk_norm=true, model.n_kv_head=2, model.logit_softcap=15.0" in message
    assert "\n" not in message
    assert not (tmp_path / "exports").exists()  # nothing written, not even the parent folder


def test_export_of_gainless_layernorms_writes_gains_of_one(tmp_path):
    model = random_gpt(norm_gain=False, bias=False)
    ckpt = write_checkpoint(model, tmp_path / "model.ckpt")
    out = export(DictConfig({"ckpt_path": str(ckpt), "out_dir": str(tmp_path / "hf")}))
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(idx)[0][..., :50]
    error = relative_error(ours, hf_logits(out, idx))
    assert error < 1e-5, error


def test_a_checkpoint_from_before_the_components_loads_and_exports_as_gpt2(char_run, tmp_path):
    # hyperparameters written before GPTConfig had position, norm, ... : their defaults are GPT-2's
    ckpt = torch.load(char_run["best_ckpt"], map_location="cpu", weights_only=True)
    fields = ckpt["hyper_parameters"]["model"]
    for name in (*GPT2_COMPONENTS, "rope_base"):
        del fields[name]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    model, tokenizer, _ = load_checkpoint(old)
    assert {k: getattr(model.config, k) for k in GPT2_COMPONENTS} == GPT2_COMPONENTS
    out = export(DictConfig({"ckpt_path": str(old), "out_dir": str(tmp_path / "hf")}))
    idx = torch.tensor([[tokenizer.encode(ch)[0] for ch in SAMPLE[:32]]])
    with torch.no_grad():
        ours = model(idx)[0][..., : tokenizer.vocab_size]
    error = relative_error(ours, hf_logits(out, idx))
    assert error < 1e-4, error


class CreatesAFile:
    """Unpickled, this would call ``Path.touch(path)``: the code a malicious ``pytorch_model.bin`` holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_init_from_a_pickle_holding_code_is_refused_without_running_it(tiny_gpt2_dir, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_bytes((tiny_gpt2_dir / "config.json").read_bytes())
    marker = tmp_path / "pwned"
    weights = {"transformer.wte.weight": torch.zeros(2), "payload": CreatesAFile(marker)}
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(ValueError) as raised:
        load_pretrained(str(folder))
    message = str(raised.value)
    assert message.startswith(f"model.init_from={folder}: its pytorch_model.bin holds code (pickled objects")
    assert "tensors, such as getattr), so it was not loaded; pass a folder with model.safetensors" in message
    assert "weights_only=False" not in message and "\n" not in message  # not torch's advice; one line
    assert not marker.exists()


# nanoGPT's config/finetune_shakespeare.py (with its train.py defaults for what that file leaves out)
NANOGPT_FINETUNE_SHAKESPEARE = {
    "model.init_from": "gpt2",  # nanoGPT's is gpt2-xl; the comment in the experiment says how to pick it
    "model.dropout": 0.0,
    "model.block_size": 1024,
    "data.tokenizer": "gpt2",
    "data.batch_size": 1,
    "data.eval_batches": 40,  # eval_iters
    "trainer.accumulate_grad_batches": 32,
    "trainer.max_steps": 20,
    "trainer.val_check_interval": 5,
    "trainer.gradient_clip_val": 1.0,
    "optimizer.lr": 3e-5,
    "optimizer.betas": [0.9, 0.95],
    "optimizer.weight_decay": 0.1,
    # always_save_checkpoint=False: best.ckpt only when val improves; last.ckpt at validations only
    "callbacks.last_checkpoint.every_n_train_steps": None,
}


def test_finetune_shakespeare_composes_to_nanogpts_recipe():
    cfg = compose_train(["experiment=finetune_shakespeare"])
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    cfg = derived(cfg, 50257, pretrained_shape=pretrained_shape(cfg.model.init_from)).cfg
    composed = {key: OmegaConf.select(cfg, key) for key in NANOGPT_FINETUNE_SHAKESPEARE}
    composed["optimizer.betas"] = list(composed["optimizer.betas"])
    assert composed == NANOGPT_FINETUNE_SHAKESPEARE
    assert not cfg.get("scheduler")  # decay_lr=False: a constant learning rate
    assert cfg.data.block_size == 1024


def test_offline_init_from_a_name_with_no_copy_names_the_local_folder_form(text_path, tmp_path):
    hf_home = tmp_path / "hf"  # an empty cache
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub")}
    args = [
        "experiment=finetune_shakespeare",
        "trainer.accelerator=cpu",
        f"data.path={text_path}",
        f"paths.root_dir={tmp_path}",
    ]
    result = run_cli("nanogpt-train", args, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "FileNotFoundError: model.init_from=gpt2" in result.stderr
    assert "model.init_from=/path/to/folder, a folder written by save_pretrained" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_finetune_records_the_pretrained_shape_it_trained_with(finetuned_run, tiny_gpt2_dir):
    # model=gpt2_pretrained leaves the shape null; config.yaml, the loggers and the model all have
    # the checkpoint's
    run = finetuned_run["run"]
    recorded = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    assert finetuned_run["cfg"].model.n_embd is None  # as composed
    shape = pretrained_shape(str(tiny_gpt2_dir))
    assert {k: recorded["model"][k] for k in shape} == shape
    assert recorded["data"]["block_size"] == shape["block_size"] == 64
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model = {k: v for k, v in recorded["model"].items() if k != "init_from"}
    assert saved["hyper_parameters"]["model"] == model  # what the model was built with
    # the loggers: the derived config, with Lightning's own copy of the module's model config over it
    logged = OmegaConf.to_container(OmegaConf.load(run / "csv" / "hparams.yaml"))
    assert {k: logged[k] for k in recorded} == {**recorded, "model": model}
