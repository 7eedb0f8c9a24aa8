from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from nanogpt import CONFIG_DIR

from .conftest import SEARCHED_KEYS, compose_train

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    f"{group.name}={p.stem}"
    for group in sorted(Path(CONFIG_DIR).iterdir())
    if group.is_dir() and group.name not in {"experiment", "hydra", "local", "hparams_search"}
    for p in sorted(group.glob("*.yaml"))
]


def test_experiments_exist():
    assert {"shakespeare_char", "shakespeare_char_cpu"} <= set(EXPERIMENTS)


@pytest.mark.parametrize(
    "overrides", [[], *[[f"experiment={e}"] for e in EXPERIMENTS], *[[o] for o in GROUP_OPTIONS]]
)
def test_every_config_composes_and_builds(overrides, tmp_path):
    cfg = compose_train(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    assert cfg.data.block_size == cfg.model.block_size
    instantiate(cfg.data)
    instantiate(cfg.optimizer)
    if cfg.get("scheduler"):
        instantiate(cfg.scheduler)
    for node in (cfg.get("callbacks") or {}).values():
        if node:
            instantiate(node)


def test_shakespeare_char_is_nanogpts_baby_gpt_recipe():
    cfg = compose_train(["experiment=shakespeare_char"])
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (6, 6, 384, 256, 0.2)
    assert cfg.data.batch_size == 64
    assert (
        cfg.optimizer.lr == 1e-3
        and list(cfg.optimizer.betas) == [0.9, 0.99]
        and cfg.optimizer.weight_decay == 0.1
    )
    s = cfg.scheduler
    assert (s.warmup_steps, s.decay_steps, s.min_lr) == (100, 5000, 1e-4)
    t = cfg.trainer
    assert (t.max_steps, t.val_check_interval, t.gradient_clip_val, t.accelerator) == (5000, 250, 1.0, "gpu")
    ckpt = cfg.callbacks.model_checkpoint
    assert (ckpt.monitor, ckpt.save_top_k, ckpt.save_last) == ("val/loss", 1, True)


def test_shakespeare_char_cpu_is_the_laptop_recipe():
    cfg = compose_train(["experiment=shakespeare_char_cpu"])
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (4, 4, 128, 64, 0.0)
    assert (cfg.data.batch_size, cfg.data.eval_batches) == (12, 20)
    assert (cfg.trainer.max_steps, cfg.scheduler.decay_steps, cfg.trainer.accelerator) == (2000, 2000, "cpu")
    assert (cfg.optimizer.lr, cfg.scheduler.warmup_steps, cfg.scheduler.min_lr) == (1e-3, 100, 1e-4)


def test_command_line_overrides_win_over_the_experiment():
    cfg = compose_train(
        ["experiment=shakespeare_char_cpu", "model.n_layer=8", "optimizer.lr=3e-4", "trainer.max_steps=500"]
    )
    assert (cfg.model.n_layer, cfg.optimizer.lr, cfg.trainer.max_steps) == (8, 3e-4, 500)
    assert cfg.scheduler.decay_steps == 2000  # the experiment pins the schedule length


def test_unknown_experiment_lists_the_choices():
    with pytest.raises(MissingConfigException, match=r"Could not find 'experiment/shakespeare'") as err:
        compose_train(["experiment=shakespeare"])
    assert "shakespeare_char_cpu" in str(err.value)


def test_optuna_search_covers_existing_keys_and_keeps_its_study_in_one_folder():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hparams_search=shakespeare_optuna", "experiment=shakespeare_char_cpu"],
            return_hydra_config=True,
        )
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
