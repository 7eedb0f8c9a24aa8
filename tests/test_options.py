"""A training run's options are checked before any data work, each error naming the override that
fixes it (nanogpt.options.check_options); a run shorter than its warm-up warms up over a tenth of it."""

import copy
import functools
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from nanogpt import CONFIG_DIR
from nanogpt.options import check_options
from nanogpt.schedule import warmup_cosine_factor
from nanogpt.training.job import train

from .helpers import TINY, compose_train, derived, strict_json

EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
GROUP_OPTIONS = [
    f"{group}={p.stem}"
    for group in ("trainer", "scheduler", "optimizer", "data", "model", "debug")
    for p in sorted((Path(CONFIG_DIR) / group).glob("*.yaml"))
]


@functools.cache
def tiny() -> DictConfig:
    return compose_train(TINY)


def tiny_with(*overrides: str, base: Callable[[], DictConfig] = tiny) -> DictConfig:
    """The tiny recipe (or ``base``) with ``key=value`` overrides, typed as Hydra types them, without
    composing it again for each (interpolations such as scheduler.decay_steps still follow)."""
    cfg = copy.deepcopy(base())
    for override in map(OverridesParser.create().parse_override, overrides):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


@pytest.mark.parametrize("override", [*[f"experiment={e}" for e in EXPERIMENTS], *GROUP_OPTIONS])
def test_every_shipped_config_passes_the_checks(override):
    check_options(compose_train([override]))


@pytest.mark.parametrize(
    "override",
    [
        "seed=0",
        "seed=4294967295",
        "seed=null data.seed=7",  # torch unseeded, the training stream seeded alone
        "trainer.val_check_interval=null",  # validates at the last step only
        "trainer.log_every_n_steps=0",
        "trainer.gradient_clip_val=0",
        "trainer.gradient_clip_val=null",
        "trainer.devices=-1",
        "trainer.devices=auto",
        "trainer.devices=[0,1]",
        "optimizer.lr=0",  # a frozen model, which tests use
        "optimizer.betas=[0,0.999]",
        "scheduler.warmup_steps=0",
        "scheduler.min_lr_ratio=1",
        "trainer.max_steps=1",
    ],
)
def test_valid_edge_values_pass(override):
    check_options(tiny_with(*override.split()))


# override -> what the one-line error says: the option, what it must be, and the override to set
BAD_OPTIONS = {
    # raw ZeroDivisionError or TypeError before
    "trainer.val_check_interval=0": "trainer.val_check_interval must be a positive integer, got 0; set "
    "trainer.val_check_interval=",
    "trainer.val_check_interval=0.5": "trainer.val_check_interval must be a positive integer, got 0.5",
    "trainer.accumulate_grad_batches=0": "trainer.accumulate_grad_batches must be a positive integer, got 0; "
    "set trainer.accumulate_grad_batches=",
    "trainer.accumulate_grad_batches=null": "trainer.accumulate_grad_batches must be a positive integer, "
    "got None",
    # a TypeError deep in torch, or torch's ValueError without the option's name, before
    "optimizer.lr=abc": "optimizer.lr must be a number >= 0, got 'abc'; set optimizer.lr=",
    "optimizer.lr=-0.001": "optimizer.lr must be a number >= 0, got -0.001",
    "optimizer.lr=nan": "optimizer.lr must be a number >= 0, got nan",
    "optimizer.weight_decay=-0.1": "optimizer.weight_decay must be a number >= 0, got -0.1; set "
    "optimizer.weight_decay=",
    "optimizer.eps=abc": "optimizer.eps must be a number >= 0, got 'abc'",
    "optimizer.betas=[0.9]": r"optimizer.betas must be two numbers in [0, 1) (the moment decay rates), "
    "got [0.9]; set optimizer.betas=[0.9,0.95]",
    "optimizer.betas=[0.9,1.0]": "optimizer.betas must be two numbers in [0, 1)",
    "optimizer.betas=0.9": "optimizer.betas must be two numbers in [0, 1)",
    "scheduler.warmup_steps=-1": "scheduler.warmup_steps must be an integer >= 0",
    "scheduler.warmup_steps=abc": "scheduler.warmup_steps must be an integer >= 0",
    "scheduler.decay_steps=0": "scheduler.decay_steps must be a positive integer",
    "scheduler.min_lr_ratio=2": "scheduler.min_lr_ratio must be in [0, 1]",
    "scheduler.min_lr_ratio=abc": "scheduler.min_lr_ratio must be in [0, 1]",
    # Lightning's errors after the data work, before
    "trainer.devices=0": "trainer.devices must be a number of devices per machine (one process each), -1 "
    "for all of them, or auto, got 0; set trainer.devices=1",
    "trainer.devices=-2": "trainer.devices must be a number of devices per machine",
    "trainer.devices=abc": "trainer.devices must be a number of devices per machine",
    "trainer.num_nodes=0": "trainer.num_nodes must be a positive integer, got 0",
    # blamed the warm-up before, or "completed" with no checkpoint
    "trainer.max_steps=0": "trainer.max_steps must be a positive integer, got 0; set trainer.max_steps=",
    "trainer.max_steps=1.5": "trainer.max_steps must be a positive integer, got 1.5",
    "trainer.max_steps=-1": "trainer.max_steps=-1 means no limit to Lightning, and the stream of training "
    "windows is endless, so the run would never end; set trainer.max_steps=N",
    # numpy's message, without the option's name, before
    "seed=-1": "seed must be an integer in [0, 2**32-1] (what numpy's generators take), got -1; set seed=",
    "seed=4294967296": "seed must be an integer in [0, 2**32-1]",
    "seed=1.5": "seed must be an integer in [0, 2**32-1]",
    "seed=null": "seed=null leaves the training stream without a seed (data.seed follows seed)",
    "data.seed=-3": "data.seed must be an integer in [0, 2**32-1]",
    # silently no clipping, or Lightning's TypeError at the first step, before
    "trainer.gradient_clip_val=-1": "trainer.gradient_clip_val must be a number >= 0",
    "trainer.gradient_clip_val=abc": "trainer.gradient_clip_val must be a number >= 0",
    "trainer.log_every_n_steps=-1": "trainer.log_every_n_steps must be an integer >= 0",
    # a ZeroDivisionError with data.global_batch_tokens, and the DataModule's error after the data work
    "data.batch_size=0": "data.batch_size must be a positive integer, got 0",
}


@pytest.mark.parametrize("override, message", BAD_OPTIONS.items(), ids=list(BAD_OPTIONS))
def test_a_bad_option_is_named_with_its_fix_in_one_line(override, message):
    cfg = tiny_with(override)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        check_options(cfg)
    assert "\n" not in str(err.value)


@functools.cache
def tiny_muon() -> DictConfig:
    # trainer=cpu has no strategy key, which the rows below set: auto, Lightning's default
    return compose_train([*TINY, "optimizer=muon", "+trainer.strategy=auto"])


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.matrix_lr=0",
        "optimizer.momentum=0",  # plain orthogonalised gradients
        "optimizer.nesterov=false",
        "optimizer.ns_steps=1",
        "optimizer.ns_steps=99",
        "optimizer.adjust_lr_fn=original",
        "optimizer.adjust_lr_fn=match_rms_adamw",
        "optimizer.weight_decay=0.1",
        "trainer.strategy=ddp",  # a copy of each matrix per rank, whole
    ],
)
def test_valid_muon_values_pass(override):
    check_options(tiny_with(override, base=tiny_muon))


# optimizer=muon's own options: torch's ValueError or TypeError at the first step, or matrices that
# never move (momentum=1), before
BAD_MUON_OPTIONS = {
    "optimizer.matrix_lr=-0.02": "optimizer.matrix_lr must be a number >= 0, got -0.02; set "
    "optimizer.matrix_lr=",
    "optimizer.matrix_lr=abc": "optimizer.matrix_lr must be a number >= 0, got 'abc'",
    "optimizer.momentum=1": "optimizer.momentum must be a number in [0, 1) (the momentum buffer's decay), "
    "got 1; set optimizer.momentum=0.95",
    "optimizer.momentum=-0.5": "optimizer.momentum must be a number in [0, 1)",
    "optimizer.momentum=nan": "optimizer.momentum must be a number in [0, 1)",
    "optimizer.nesterov=yes": "optimizer.nesterov must be true or false, got 'yes'; set "
    "optimizer.nesterov=true",
    "optimizer.ns_steps=0": "optimizer.ns_steps must be an integer in [1, 99] (Newton-Schulz iterations "
    "per update), got 0; set optimizer.ns_steps=5",
    "optimizer.ns_steps=100": "optimizer.ns_steps must be an integer in [1, 99]",
    "optimizer.ns_steps=2.5": "optimizer.ns_steps must be an integer in [1, 99]",
    "optimizer.ns_steps=true": "optimizer.ns_steps must be an integer in [1, 99]",
    "optimizer.adjust_lr_fn=none": "optimizer.adjust_lr_fn must be null or original (Keller Jordan's "
    "scaling of each matrix's rate) or match_rms_adamw (updates the size of AdamW's), got 'none'; set "
    "optimizer.adjust_lr_fn=null",
    "optimizer.lr=-1": "optimizer.lr must be a number >= 0",  # AdamW's part, checked as optimizer=adamw
    "optimizer.betas=[0.9,1.0]": "optimizer.betas must be two numbers in [0, 1)",
    # the factory's own error, after the data work and the model's wrapping, before
    "trainer.strategy=fsdp": "optimizer=muon cannot train under FSDP (trainer=fsdp): Muon's Newton-Schulz "
    "step orthogonalises each hidden matrix whole, and FSDP has flattened them into 1-d shards by the time "
    "the optimizer is built; use trainer=ddp with optimizer=muon, or optimizer=adamw with trainer=fsdp",
    "trainer.strategy=fsdp_cpu_offload": "optimizer=muon cannot train under FSDP",
}


@pytest.mark.parametrize("override, message", BAD_MUON_OPTIONS.items(), ids=list(BAD_MUON_OPTIONS))
def test_a_bad_muon_option_is_named_with_its_fix_in_one_line(override, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        check_options(tiny_with(override, base=tiny_muon))
    assert "\n" not in str(err.value)


def test_trainer_fsdp_with_muon_is_refused_before_any_data_work(cfg_tiny):
    cfg = compose_train([*TINY, "trainer=fsdp", "optimizer=muon"])  # the strategy as a configured class
    with open_dict(cfg):
        cfg.paths, cfg.data = cfg_tiny.paths, cfg_tiny.data
    with pytest.raises(ValueError, match=re.escape("optimizer=muon cannot train under FSDP (trainer=fsdp)")):
        train(cfg)
    assert not Path(cfg_tiny.data.data_dir).exists()
    assert strict_json(Path(cfg_tiny.paths.output_dir) / "result.json")["status"] == "failed"


@pytest.mark.parametrize("max_steps", ["0", "-1", "1.5"])
def test_a_bad_max_steps_blames_itself_not_the_warmup(max_steps):
    # scheduler.decay_steps follows trainer.max_steps, and used to be what the error named
    cfg = compose_train(["experiment=shakespeare_char_cpu", f"trainer.max_steps={max_steps}"])
    with pytest.raises(ValueError, match=re.escape("trainer.max_steps")) as err:
        check_options(cfg)
    assert "warmup" not in str(err.value)


def learning_rates(cfg, caplog) -> list[float]:
    """The learning rate of every optimizer step of ``cfg``'s run, as its scheduler sets them."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    with caplog.at_level(logging.WARNING, logger="nanogpt.schedule"):
        scheduler = instantiate(cfg.scheduler)(optimizer)
    lrs = []
    for _ in range(cfg.trainer.max_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_a_run_shorter_than_its_warmup_warms_up_over_a_tenth_of_it(caplog):
    # a smoke run of the CPU recipe, whose warm-up is 100 steps
    cfg = compose_train(["experiment=shakespeare_char_cpu", "trainer.max_steps=30"])
    check_options(cfg)
    lrs = learning_rates(cfg, caplog)
    peak, floor = cfg.optimizer.lr, cfg.optimizer.lr * cfg.scheduler.min_lr_ratio
    # nanoGPT's warm-up over 3 steps, lr * (it + 1) / (3 + 1), then the cosine from step 3 to the last
    warmup = [peak * (s + 1) / 4 for s in range(3)]
    decay = [floor + 0.5 * (1 + math.cos(math.pi * (s - 3) / 26)) * (peak - floor) for s in range(3, 30)]
    assert lrs == pytest.approx(warmup + decay, rel=1e-12)
    assert lrs[3] == pytest.approx(peak) and lrs[-1] == pytest.approx(floor)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (
        "scheduler.warmup_steps=100 is longer than this 30-step schedule (scheduler.decay_steps, which "
        "follows trainer.max_steps unless set): it warms up over 3 steps, a tenth of it; set "
        "scheduler.warmup_steps=N (at most 30) to choose"
    )


@pytest.mark.parametrize("max_steps", [100, 500])
def test_a_run_as_long_as_its_warmup_keeps_it(max_steps, caplog):
    cfg = compose_train(["experiment=shakespeare_char_cpu", f"trainer.max_steps={max_steps}"])
    lrs = learning_rates(cfg, caplog)
    assert lrs[99] == pytest.approx(cfg.optimizer.lr * 100 / 101)  # still warming up at step 99
    assert not caplog.records


@pytest.mark.parametrize(
    "name", [e for e in EXPERIMENTS if compose_train([f"experiment={e}"]).get("scheduler")]
)
def test_full_length_recipes_keep_their_learning_rate_curve(name, caplog):
    cfg = compose_train([f"experiment={name}"])
    s = cfg.scheduler
    lrs = learning_rates(cfg, caplog)
    # bitwise: the curve of the config's own warm-up, with nothing fitted
    assert lrs == [
        cfg.optimizer.lr * warmup_cosine_factor(i, s.warmup_steps, s.decay_steps, s.min_lr_ratio)
        for i in range(cfg.trainer.max_steps)
    ]
    assert not caplog.records


def test_a_run_checks_its_options_before_any_data_work(cfg_tiny):
    # nanogpt-train prints the ValueError in one line (test_no_run_harms_another checks the wrapper)
    with open_dict(cfg_tiny):
        cfg_tiny.trainer.val_check_interval = 0
    message = (
        "trainer.val_check_interval must be a positive integer, got 0; set trainer.val_check_interval=..."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        train(cfg_tiny)
    assert not Path(cfg_tiny.data.data_dir).exists()  # refused before the corpus was prepared
    assert strict_json(Path(cfg_tiny.paths.output_dir) / "result.json")["status"] == "failed"


def test_a_model_vocabulary_smaller_than_the_datas_is_refused_naming_both(cfg_tiny):
    with open_dict(cfg_tiny):
        cfg_tiny.model.vocab_size = 10
    with pytest.raises(
        ValueError, match=r"model.vocab_size=10 is smaller than the data's vocabulary \(\d+ tokens"
    ):
        train(cfg_tiny)
    assert strict_json(Path(cfg_tiny.paths.output_dir) / "result.json")["status"] == "failed"


def test_the_recorded_config_holds_the_warmup_a_short_run_used(caplog):
    cfg = compose_train(["experiment=shakespeare_char_cpu", "trainer.max_steps=30"])
    with caplog.at_level(logging.WARNING, logger="nanogpt"):
        spec = derived(cfg)
    assert spec.cfg.scheduler.warmup_steps == 3 and cfg.scheduler.warmup_steps == 100
    assert "it warms up over 3 steps, a tenth of it" in caplog.text
    full = derived(compose_train(["experiment=shakespeare_char_cpu"]))
    assert full.cfg.scheduler.warmup_steps == 100
