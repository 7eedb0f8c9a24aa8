import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from nanogpt import CONFIG_DIR
from nanogpt.devices import cpu_has_native_bf16
from nanogpt.hf.gpt2 import pretrained_shape
from nanogpt.metrics.bleu import BleuSettings
from nanogpt.training.job import train

from .helpers import SEARCHED_KEYS, compose_train, derived

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    f"{group.name}={p.stem}"
    for group in sorted(Path(CONFIG_DIR).iterdir())
    # bleu is composed inside callbacks (and nanogpt-eval), not at the top of train.yaml
    if group.is_dir() and group.name not in {"experiment", "hydra", "local", "hparams_search", "bleu"}
    for p in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize(
    "overrides", [[], *[[f"experiment={e}"] for e in EXPERIMENTS], *[[o] for o in GROUP_OPTIONS]]
)
def test_every_config_composes_and_builds(overrides, tmp_path):
    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        if OmegaConf.is_missing(cfg.data, "source"):  # data=text: the user names the corpus
            cfg.data.source = str(tmp_path)
    # the derived config, as a run builds from it (model=gpt2_pretrained: its shape is known offline)
    init_from = cfg.model.get("init_from")
    cfg = derived(cfg, pretrained_shape=pretrained_shape(init_from) if init_from else None).cfg
    assert cfg.data.block_size == cfg.model.block_size
    instantiate(cfg.data)
    instantiate(cfg.optimizer)
    if cfg.get("scheduler"):
        instantiate(cfg.scheduler)
    for node in (cfg.get("callbacks") or {}).values():
        if node:
            instantiate(node)


def experiment_yaml(name: str) -> DictConfig:
    return OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{name}.yaml")


def what_it_builds_on(name: str) -> tuple[list[str], list[str]]:
    """The experiments it extends (as overrides), and its group choices (``group=option``)."""
    parents, choices = [], []
    for entry in experiment_yaml(name).get("defaults", []):
        if isinstance(entry, str):
            if entry != "_self_":
                parents.append(f"experiment={entry}")
        else:
            ((key, option),) = entry.items()
            choices.append(f"{key.removeprefix('override').strip().lstrip('/')}={option}")
    return parents, choices


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, DictConfig):
        out = {}
        for key in node:
            out.update(leaves(node._get_node(key), f"{prefix}{key}."))
        return out
    value = OmegaConf.to_container(node) if isinstance(node, ListConfig) else node._value()
    return {prefix[:-1]: value}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_state_only_what_differs(name):
    parents, choices = what_it_builds_on(name)
    # a group option the experiment picks must not be the one it would get anyway
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        before = compose(config_name="train", overrides=parents, return_hydra_config=True)
    for choice in choices:
        group, option = choice.split("=")
        assert before.hydra.runtime.choices.get(group) != option, f"{name} restates {choice}"

    # a value the experiment sets must differ from what its defaults and group choices give
    base = compose_train(parents + choices)
    body = experiment_yaml(name)
    body.pop("defaults", None)
    for key, value in leaves(body).items():
        if key == "name":
            continue
        default = OmegaConf.select(base, key, default="<missing>")
        if isinstance(default, ListConfig):
            default = OmegaConf.to_container(default)
        assert default != value, f"experiment/{name}.yaml restates {key}: {value!r}, already the default"


def test_the_bleu_recipe_has_one_set_of_defaults():
    # the recipe's Python defaults and the config that training and nanogpt-eval compose
    recipe = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "bleu" / "default.yaml"))
    assert recipe == dataclasses.asdict(BleuSettings())
    train_bleu = compose_train([]).callbacks.bleu
    assert {k: train_bleu[k] for k in recipe} == recipe


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_a_smoke_test_with_debug_fdr(name, tmp_path, text_path, request):
    overrides = [f"experiment={name}", "debug=fdr"]
    if not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")  # the GPU recipes, on this machine's CPU
        if not cpu_has_native_bf16():
            # emulated bf16 took 283 s for this smoke test on an AVX2-only CPU, float32 24 s
            overrides.append("trainer.precision=32-true")
    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
        cfg.data.path = str(text_path)
        cfg.data.num_workers = 0  # a worker process per test only costs time
        cfg.data.pin_memory = False
        if not torch.cuda.is_available():  # one batch of GPU size would take minutes on a CPU
            cfg.data.batch_size = min(cfg.data.batch_size, 4)
        if cfg.model.get("init_from"):  # nothing is downloaded in tests: start from a small random GPT-2
            cfg.model.init_from = str(request.getfixturevalue("tiny_gpt2_dir"))
    metrics = train(cfg)
    run = tmp_path / "run"
    assert metrics["step"] == 1 and metrics["val/loss"] > 0
    # what debug/fdr.yaml promises: no checkpoints, no logger files, no loss.png; the record stays
    assert json.loads((run / "result.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "result.json"]
    # one batch pays for no compile, whatever the recipe's trainer.max_steps (compile=auto)
    assert OmegaConf.load(run / "config.yaml").compile is False


# nanoGPT's config/train_shakespeare_char.py (with its train.py defaults for what that file leaves out)
NANOGPT_SHAKESPEARE_CHAR = {
    "model.n_layer": 6,
    "model.n_head": 6,
    "model.n_embd": 384,
    "model.block_size": 256,
    "model.dropout": 0.2,
    "model.bias": False,
    "data.batch_size": 64,
    "optimizer.lr": 1e-3,
    "optimizer.betas": [0.9, 0.99],
    "optimizer.weight_decay": 0.1,
    "scheduler.warmup_steps": 100,
    "scheduler.decay_steps": 5000,  # lr_decay_iters
    "scheduler.min_lr_ratio": 0.1,  # min_lr 1e-4 = lr / 10
    "trainer.max_steps": 5000,
    "trainer.val_check_interval": 250,
    "trainer.gradient_clip_val": 1.0,
    "trainer.accumulate_grad_batches": 1,
}


def test_shakespeare_char_composes_to_nanogpts_recipe():
    # the experiment states only its differences; composed with the defaults it must be nanoGPT's recipe
    cfg = compose_train(["experiment=shakespeare_char"])
    with open_dict(cfg):
        cfg.paths.output_dir = "."
    composed = {key: OmegaConf.select(cfg, key) for key in NANOGPT_SHAKESPEARE_CHAR}
    composed["optimizer.betas"] = list(composed["optimizer.betas"])
    assert composed == NANOGPT_SHAKESPEARE_CHAR


def test_command_line_overrides_win_over_the_experiment():
    cfg = compose_train(
        ["experiment=shakespeare_char_cpu", "model.n_layer=8", "optimizer.lr=3e-4", "trainer.max_steps=500"]
    )
    assert (cfg.model.n_layer, cfg.optimizer.lr, cfg.trainer.max_steps) == (8, 3e-4, 500)
    assert cfg.scheduler.decay_steps == 500  # the schedule follows the run's length


MODELS = sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml"))


def test_init_from_with_a_from_scratch_model_is_refused_naming_gpt2_pretrained(tmp_path):
    # every model config takes model.init_from (no "not in struct" from Hydra)
    for model in MODELS:
        assert compose_train([f"model={model}", "model.init_from=gpt2"]).model.init_from == "gpt2"
    # the default model has a shape of its own, not GPT-2's: refused at the first check, before any
    # download or data work, naming the model config whose shape is the checkpoint's
    cfg = compose_train(["model.init_from=gpt2"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.data.data_dir = str(tmp_path / "data")
    with pytest.raises(
        ValueError, match=r"model.n_layer=6.*; start from model=gpt2_pretrained, .*data=shakespeare_gpt2\)$"
    ):
        train(cfg)
    assert not (tmp_path / "data").exists()


def test_unknown_experiment_lists_the_choices():
    with pytest.raises(MissingConfigException, match=r"Could not find 'experiment/shakespear'") as err:
        compose_train(["experiment=shakespear"])
    assert "shakespeare_char_cpu" in str(err.value)


def compose_search(search: str, *extra: str) -> DictConfig:
    """The CPU recipe under an Optuna search, with its Hydra config (the sweeper's settings)."""
    pytest.importorskip("optuna")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        overrides = [f"hparams_search={search}", "experiment=shakespeare_char_cpu", *extra]
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_optuna_search_covers_existing_keys_and_keeps_its_study_in_one_folder():
    cfg = compose_search("shakespeare_optuna")
    params = cfg.hydra.sweeper.params
    assert set(params) == SEARCHED_KEYS
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, key
    assert cfg.optimized_metric == "best_val_loss" and cfg.hydra.sweeper.direction == "minimize"
    # the study's folder and database do not depend on the time, so re-running resumes it
    assert cfg.hydra.sweep.dir.endswith("runs/shakespeare_char_cpu/optuna_search")
    assert cfg.hydra.sweeper.storage.endswith("runs/shakespeare_char_cpu/optuna_search/optuna.db")
    # every width of the search divides into the CPU recipe's heads
    widths = [int(w) for w in params["model.n_embd"].removeprefix("choice(").rstrip(")").split(",")]
    assert all(w % cfg.model.n_head == 0 for w in widths)


def test_the_cpu_optimisation_search_keeps_the_recipes_compute():
    cfg = compose_search("shakespeare_char_cpu_optim")
    params = cfg.hydra.sweeper.params
    assert set(params) == {
        "optimizer.lr",
        "scheduler.warmup_steps",
        "optimizer.weight_decay",
        "scheduler.min_lr_ratio",
    }
    for key in params:
        assert OmegaConf.select(cfg, key) is not None, key
    # nothing that changes the compute of a trial is searched: shape, context, batch, steps
    assert not any(key.startswith(("model.", "data.", "trainer.")) for key in params)
    assert cfg.hydra.sweeper.storage.endswith("runs/shakespeare_char_cpu/optuna_cpu_optim/optuna.db")


PRUNERS = sorted(p.stem for p in (Path(CONFIG_DIR) / "hydra" / "sweeper" / "pruner").glob("*.yaml"))


@pytest.mark.parametrize("pruner", [None, *PRUNERS])
def test_every_pruner_config_builds_the_sweeper_hydra_runs(pruner):
    from hydra.core.plugins import Plugins
    from hydra.utils import instantiate

    extra = [f"hydra/sweeper/pruner={pruner}"] if pruner else []
    cfg = compose_search("shakespeare_char_cpu_optim", *extra)
    sweeper = cfg.hydra.sweeper
    # Hydra accepts only plugins it found in the hydra_plugins namespace: ours is one of them
    assert sweeper._target_ in {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover()}
    built = instantiate(sweeper.pruner) if sweeper.pruner else None
    expected = {None: None, "median": "MedianPruner", "successive_halving": "SuccessiveHalvingPruner"}
    assert (type(built).__name__ if built else None) == expected[pruner]
    assert (
        sweeper.study_name == "cpu_optim" and sweeper.n_trials == 12 and sweeper.sampler.n_startup_trials == 6
    )
