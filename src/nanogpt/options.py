"""Checks of user options whose errors name the override that fixes them.

:func:`check_options` checks a training run's options before any data work: the trainer's counts,
the seed, the optimizer's and the scheduler's numbers, the batch size. Without it each would fail
later in its own words (a ``ZeroDivisionError``, a ``TypeError`` deep in torch, numpy's seed range)
or not at all (``trainer.max_steps=0`` "completes" with no checkpoint). The model's fields are
:class:`~nanogpt.model.GPTConfig`'s to check, and the machine is
:func:`~nanogpt.devices.check_trainer_fits_machine`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any

from nanogpt.schedule import check_warmup_cosine, warmup_cosine

# numpy's generators (and Lightning's seed_everything) take seeds in [0, 2**32 - 1]
MAX_SEED = 2**32 - 1
WARMUP_COSINE = f"{warmup_cosine.__module__}.{warmup_cosine.__qualname__}"
# optimizer=muon's factory, spelled out: importing nanogpt.optimizers here would be an import cycle
# (it imports the model, which imports this module); tests/test_muon.py checks the spelling
MUON = "nanogpt.optimizers.muon"
# torch.optim.Muon's scalings of a matrix's rate: null and original are Keller Jordan's, sqrt(max(1,
# rows/cols)); match_rms_adamw is Moonshot's 0.2 sqrt(max(rows, cols))
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
# torch.optim.Muon raises at its first step (after the data work) for 100 Newton-Schulz steps or more
MAX_NS_STEPS = 99

if TYPE_CHECKING:  # model.py imports this module, and stays free of Hydra's config library
    from omegaconf import DictConfig


def positive_int(value: Any, option: str) -> int:
    """``value`` if it is an integer >= 1; otherwise an error naming ``option``, e.g. ``model.n_layer``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value!r}; set {option}=...")
    return value


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (which Python counts as an int) nor a string."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_list(value: Any) -> bool:
    """A list, from YAML or the command line (an OmegaConf ``ListConfig`` is a ``Sequence``)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def check_options(cfg: DictConfig) -> None:
    """Refuse a training config whose options would fail the run later, or run it wrongly: a
    ``ValueError`` naming the option and the override that fixes it."""
    check_trainer(cfg.trainer)
    # seed=null leaves torch, numpy and python unseeded; the training stream still needs a seed: it
    # draws batch i from (data.seed, rank, i), and data.seed follows seed unless set
    if cfg.get("seed") is not None:
        check_seed(cfg.seed, "seed")
    elif cfg.data.get("seed") is None:
        raise ValueError(
            "seed=null leaves the training stream without a seed (data.seed follows seed), and it draws "
            "its batches from one; set seed=... (e.g. seed=1337), or data.seed=... to seed the stream alone"
        )
    check_seed(cfg.data.get("seed"), "data.seed")
    if cfg.get("optimizer"):
        check_optimizer(cfg.optimizer)
        check_optimizer_fits_strategy(cfg.optimizer, cfg.trainer)
    scheduler = cfg.get("scheduler")
    if scheduler and scheduler.get("_target_") == WARMUP_COSINE:
        check_warmup_cosine(scheduler.warmup_steps, scheduler.decay_steps, scheduler.min_lr_ratio)
    # the accumulation derived from data.global_batch_tokens divides by it, before the DataModule checks it
    positive_int(cfg.data.get("batch_size"), "data.batch_size")


def check_trainer(trainer: DictConfig) -> None:
    """The Lightning Trainer's counts: Lightning divides by some, and others stop the run silently."""
    max_steps = trainer.get("max_steps")
    if max_steps == -1 and not isinstance(max_steps, bool):
        raise ValueError(
            "trainer.max_steps=-1 means no limit to Lightning, and the stream of training windows is "
            "endless, so the run would never end; set trainer.max_steps=N, the optimizer steps to train"
        )
    positive_int(max_steps, "trainer.max_steps")
    # optimizer steps between validations (nanogpt converts them to batches): a float, Lightning's
    # fraction of an epoch, means nothing on the endless stream. Null validates at the last step only,
    # and Lightning also takes a duration ("00:00:10:00"), which it checks itself
    interval = trainer.get("val_check_interval")
    if interval is not None and not isinstance(interval, (str, Mapping)):
        positive_int(interval, "trainer.val_check_interval")
    positive_int(trainer.get("accumulate_grad_batches"), "trainer.accumulate_grad_batches")
    every = trainer.get("log_every_n_steps")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 0):
        raise ValueError(
            f"trainer.log_every_n_steps must be an integer >= 0 (optimizer steps), got {every!r}; "
            "set trainer.log_every_n_steps=10"
        )
    positive_int(trainer.get("num_nodes", 1), "trainer.num_nodes")
    check_devices(trainer.get("devices", "auto"))
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_number(clip) or clip < 0):
        raise ValueError(
            f"trainer.gradient_clip_val must be a number >= 0 (the gradients' largest total norm; 0 or "
            f"null: no clipping), got {clip!r}; set trainer.gradient_clip_val=1.0, nanoGPT's"
        )


def check_devices(devices: Any) -> None:
    """``trainer.devices``: a count >= 1, -1 (every device), ``auto``, or a list of device indices."""
    if isinstance(devices, str) and "," in devices or is_list(devices):
        return  # device indices: Lightning names a missing one
    count = devices
    if isinstance(devices, str):
        if devices == "auto":
            return
        count = int(devices) if devices.strip().lstrip("-").isdigit() else None
    if isinstance(count, bool) or not isinstance(count, int) or not (count >= 1 or count == -1):
        raise ValueError(
            f"trainer.devices must be a number of devices per machine (one process each), -1 for all "
            f"of them, or auto, got {devices!r}; set trainer.devices=1"
        )


def check_seed(seed: Any, option: str) -> None:
    """A seed numpy's generators take (and Lightning's ``seed_everything``)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"{option} must be an integer in [0, 2**32-1] (what numpy's generators take), got {seed!r}; "
            f"set {option}=... (e.g. {option}=1337)"
        )


def check_optimizer(optimizer: DictConfig) -> None:
    """The optimizer's numbers that it has, in torch's ranges: AdamW's lr, betas, weight_decay and
    eps, and Muon's matrix_lr, momentum, nesterov, ns_steps and adjust_lr_fn (optimizer=muon)."""
    for key in ("lr", "matrix_lr", "weight_decay", "eps"):
        value = optimizer.get(key)
        if key in optimizer and (not is_number(value) or not value >= 0):  # NaN too
            raise ValueError(f"optimizer.{key} must be a number >= 0, got {value!r}; set optimizer.{key}=...")
    if "betas" in optimizer:
        betas = optimizer.betas
        if (
            not is_list(betas)
            or len(betas) != 2
            or not all(is_number(b) and 0 <= b < 1 for b in betas)  # NaN fails too
        ):
            shown = list(betas) if is_list(betas) else betas
            raise ValueError(
                f"optimizer.betas must be two numbers in [0, 1) (the moment decay rates), got {shown!r}; "
                "set optimizer.betas=[0.9,0.95], nanoGPT's"
            )
    # torch.optim.Muon takes 1 or more: at 1 its buffer stays zero and the matrices never move, above
    # it the buffer grows without bound
    momentum = optimizer.get("momentum")
    if "momentum" in optimizer and (not is_number(momentum) or not 0 <= momentum < 1):
        raise ValueError(
            f"optimizer.momentum must be a number in [0, 1) (the momentum buffer's decay), got {momentum!r}; "
            "set optimizer.momentum=0.95, nanochat's"
        )
    nesterov = optimizer.get("nesterov")
    if "nesterov" in optimizer and not isinstance(nesterov, bool):
        raise ValueError(
            f"optimizer.nesterov must be true or false, got {nesterov!r}; set optimizer.nesterov=true"
        )
    # 0 or fewer would skip the orthogonalisation that is Muon's point; torch refuses 100 or more only
    # at the first step, and a float only there too
    steps = optimizer.get("ns_steps")
    if "ns_steps" in optimizer and (
        isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_NS_STEPS
    ):
        raise ValueError(
            f"optimizer.ns_steps must be an integer in [1, {MAX_NS_STEPS}] (Newton-Schulz iterations per "
            f"update), got {steps!r}; set optimizer.ns_steps=5, torch's default"
        )
    adjust = optimizer.get("adjust_lr_fn")
    if "adjust_lr_fn" in optimizer and adjust not in ADJUST_LR_FNS:
        raise ValueError(
            f"optimizer.adjust_lr_fn must be null or original (Keller Jordan's scaling of each matrix's "
            f"rate) or match_rms_adamw (updates the size of AdamW's), got {adjust!r}; set "
            "optimizer.adjust_lr_fn=null"
        )


def is_fsdp(strategy: Any) -> bool:
    """Whether ``trainer.strategy`` is FSDP: by name (Lightning's ``fsdp``, ``fsdp_cpu_offload``) or a
    configured strategy class (``trainer=fsdp``'s ``lightning.pytorch.strategies.FSDPStrategy``)."""
    if isinstance(strategy, str):
        return strategy.lower().startswith("fsdp")
    if isinstance(strategy, Mapping):
        return "FSDP" in str(strategy.get("_target_", ""))
    return False


def check_optimizer_fits_strategy(optimizer: DictConfig, trainer: DictConfig) -> None:
    """optimizer=muon under FSDP, refused before any data work; ``nanogpt.optimizers.muon`` would
    refuse it too, but only once the corpus is prepared and the model wrapped."""
    if optimizer.get("_target_") == MUON and is_fsdp(trainer.get("strategy")):
        raise ValueError(
            "optimizer=muon cannot train under FSDP (trainer=fsdp): Muon's Newton-Schulz step "
            "orthogonalises each hidden matrix whole, and FSDP has flattened them into 1-d shards by the "
            "time the optimizer is built; use trainer=ddp with optimizer=muon, or optimizer=adamw with "
            "trainer=fsdp"
        )
