"""Lightning's ``FSDPStrategy`` on CPU ranks (gloo), so that the FSDP tests run without a GPU.

As shipped, FSDP cannot train on a CPU here, for three reasons:

1. Lightning's Trainer refuses it: ``ValueError: The strategy `fsdp` requires a GPU accelerator,
   but received `accelerator='cpu'``. The check is on the exact class, so a subclass passes.
2. Lightning wraps the model with ``device_id=None`` on a CPU, for which torch raises
   ``RuntimeError: FSDP needs a non-CPU accelerator device, but no accelerator device is detected``.
   torch's FSDP does shard on a CPU with gloo when it is given ``device_id=cpu``.
3. Lightning gathers full state dicts with ``offload_to_cpu=True``, and torch 2.13 segfaults
   cloning such a state dict when the model already is on the CPU (in ``_full_post_state_dict_hook``).

:class:`FSDPOnCPU` changes just those: it wraps with ``device_id=cpu`` and gathers without the
offload. The wrap policy, the optimizer built after wrapping, gradient clipping, precision and the
checkpoint files (save, resume, optimizer state) stay Lightning's and torch's. Tests only: the ranks
that ``nanogpt-train`` starts import it by name (``trainer.strategy._target_``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import lightning.fabric.strategies.fsdp as fabric_fsdp
import lightning.fabric.strategies.model_parallel as fabric_model_parallel
import lightning.pytorch.strategies.fsdp as pytorch_fsdp
import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.nn import Module


def _full_state_dict_in_place(module: Module, world_size: int, rank0_only: bool = True) -> Any:
    # Lightning's _get_full_state_dict_context, without offload_to_cpu (reason 3 above)
    return FSDP.state_dict_type(
        module=module,
        state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )


@contextlib.contextmanager
def _no_offload() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for namespace in (pytorch_fsdp, fabric_fsdp, fabric_model_parallel):
            stack.enter_context(
                mock.patch.object(namespace, "_get_full_state_dict_context", _full_state_dict_in_place)
            )
        yield


class FSDPOnCPU(FSDPStrategy):
    def _setup_model(self, model: Module) -> Module:
        # Lightning's own wrap with the device named (reason 2); Lightning then finds the model
        # wrapped and does the rest of its setup (metrics to the device, activation checkpointing).
        model = FSDP(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        return super()._setup_model(model)

    def lightning_module_state_dict(self) -> dict[str, Any]:
        with _no_offload():
            return super().lightning_module_state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        with _no_offload():
            return super().optimizer_state(optimizer)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        with _no_offload():
            return super().load_checkpoint(checkpoint_path, weights_only)
