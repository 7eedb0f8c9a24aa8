"""Training callbacks: a step-based progress bar, the start-of-run summary, val/bleu, the loss
curves (history and ``loss.png``) and the gradient norm."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from nanogpt.bleu import BleuSample, BleuSettings, evaluate_bleu, split_tokens
from nanogpt.plots import plot_run

log = logging.getLogger(__name__)


class StepProgressBar(TQDMProgressBar):
    """Progress counted in optimizer steps out of ``trainer.max_steps``, with loss and tokens/s.

    Lightning's own bar counts batches of an epoch, which an endless stream of windows does not
    have. The loss is read from the device only when the bar refreshes, not at every step.
    """

    def __init__(self, refresh_rate: int = 10, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position)
        self._extra: dict[str, Any] = {}
        self._tokens = 0
        self._t0 = 0.0

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.n = bar.initial = trainer.global_step  # a resumed run starts part-way
        self._tokens, self._t0 = 0, time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._tokens += batch[0].numel() * trainer.world_size
        step = trainer.global_step
        bar = self.train_progress_bar
        if bar is None or bar.disable or not self._should_update(step, bar.total or 0):
            return
        elapsed = time.perf_counter() - self._t0
        self._extra = {"loss": f"{outputs['loss'].item():.4f}", "tok/s": f"{self._tokens / elapsed:,.0f}"}
        bar.n = step
        bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return {**self._extra, **metrics}


class RunSummary(Callback):
    """Print what is about to run: size, tokens per step, device, precision and output folder."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = pl_module.model
        dm = trainer.datamodule
        tokens = dm.batch_size * dm.block_size * trainer.accumulate_grad_batches * trainer.world_size
        log.info(
            "\n".join(
                [
                    "nanogpt run",
                    f"  parameters      {model.num_params() / 1e6:.2f}M (without position embeddings)",
                    f"  tokens/step     {tokens:,} = batch {dm.batch_size} x context {dm.block_size}"
                    f" x accumulation {trainer.accumulate_grad_batches} x devices {trainer.world_size}",
                    f"  device          {trainer.strategy.root_device} x {trainer.world_size}",
                    f"  precision       {trainer.precision}",
                    f"  max steps       {trainer.max_steps}",
                    f"  output folder   {self.output_dir}",
                ]
            )
        )


class BleuCallback(Callback):
    """Log ``val/bleu`` after validation, and the prompt/reference/continuation samples as text.

    The recipe is in :mod:`nanogpt.bleu`. Samples go to every active logger: a W&B table, a
    TensorBoard text entry, or ``samples.jsonl`` beside a CSV logger's ``metrics.csv``.

    Args:
        num_prompts, prompt_tokens, continuation_tokens, temperature, top_k, top_p, seed, n_gram: see
            :class:`nanogpt.bleu.BleuSettings`.
        every_n_evals: measure at every n-th validation only, to save time.
    """

    def __init__(
        self,
        num_prompts: int = 16,
        prompt_tokens: int = 64,
        continuation_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        n_gram: int = 4,
        every_n_evals: int = 1,
    ) -> None:
        self.settings = BleuSettings(
            num_prompts, prompt_tokens, continuation_tokens, temperature, top_k, top_p, seed, n_gram
        )
        if isinstance(every_n_evals, bool) or not isinstance(every_n_evals, int) or every_n_evals < 1:
            raise ValueError(
                f"callbacks.bleu.every_n_evals must be a positive integer, got {every_n_evals!r}"
            )
        self.every_n_evals = every_n_evals
        self._evals = 0

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._evals += 1
        dm = trainer.datamodule
        if (self._evals - 1) % self.every_n_evals or dm is None or not hasattr(dm, "data_dir"):
            return  # prompts come from a prepared val split; a bare DataLoader has none
        # Every rank scores the same prompts the same way, so syncing averages equal values.
        score, samples = evaluate_bleu(
            pl_module.model, dm.tokenizer, split_tokens(dm.data_dir), self.settings
        )
        pl_module.log("val/bleu", score, batch_size=1, sync_dist=True)
        self._log_samples(trainer, samples)

    @rank_zero_only
    def _log_samples(self, trainer: L.Trainer, samples: list[BleuSample]) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                rows = [[step, s.prompt, s.reference, s.continuation] for s in samples]
                logger.log_text(
                    "val/samples", columns=["step", "prompt", "reference", "continuation"], data=rows
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/samples", _markdown(samples), global_step=step)
            elif isinstance(logger, CSVLogger):
                path = Path(logger.log_dir) / "samples.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as f:
                    for s in samples:
                        f.write(json.dumps({"step": step, **dataclasses.asdict(s)}) + "\n")


def _markdown(samples: list[BleuSample]) -> str:
    # TensorBoard renders text as Markdown; indenting by 4 spaces keeps newlines and spacing.
    def block(text: str) -> str:
        return "\n".join("    " + line for line in text.splitlines())

    parts = [
        f"**prompt**\n\n{block(s.prompt)}\n\n**reference**\n\n{block(s.reference)}\n\n"
        f"**model**\n\n{block(s.continuation)}"
        for s in samples
    ]
    return "\n\n---\n\n".join(parts)


class LossCurves(Callback):
    """Keep the run's loss history and draw it into ``<output_dir>/loss.png`` when training ends.

    ``history`` maps ``train/loss`` (every ``trainer.log_every_n_steps`` steps) and every ``val/*``
    metric (every validation) to ``(step, value)`` points, the step counting optimizer steps done.
    It travels in the checkpoint, so a resumed run draws its whole history. ``train()`` copies it
    into ``result.json`` for sweep reports. The plot is also drawn when training fails part-way.
    """

    def __init__(self, output_dir: str, filename: str = "loss.png") -> None:
        self.path = Path(output_dir) / filename
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _add(self, key: str, step: int, value: float) -> None:
        points = self.history.setdefault(key, [])
        if not points or points[-1][0] != step:  # accumulation: one point per optimizer step
            points.append((step, value))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # the loggers' own cadence, so reading the loss off the device adds no extra sync
        if step % max(trainer.log_every_n_steps, 1) == 0 and isinstance(outputs, dict) and "loss" in outputs:
            self._add("train/loss", step, outputs["loss"].item())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/"):
                self._add(key, trainer.global_step, float(value))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plot(trainer)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._plot(trainer)

    @rank_zero_only
    def _plot(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run:
            return  # debug=fdr writes nothing
        try:
            run = self.path.parent
            plot_run(
                self.history, self.path, title=f"{run.parent.name}/{run.name} (step {trainer.global_step})"
            )
        except Exception as err:  # a plot is never worth failing (or masking the error of) a run
            log.warning("could not draw %s: %s", self.path, err)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [(int(s), float(v)) for s, v in pts] for k, pts in state_dict["history"].items()}


class GradNorm(Callback):
    """Log ``train/grad_norm``: the norm of all gradients together, before clipping.

    Measured on the loggers' cadence (every ``trainer.log_every_n_steps`` steps) only, as each
    measurement reads every gradient once. Under DDP the gradients are already averaged, so every
    rank measures the same norm.
    """

    def __init__(self, norm_type: float = 2.0) -> None:
        self.norm_type = float(norm_type)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning writes step metrics when (steps done + 1) is a multiple of log_every_n_steps
        if (trainer.global_step + 1) % max(trainer.log_every_n_steps, 1):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.detach().float(), self.norm_type) for g in grads]),
            self.norm_type,
        )
        pl_module.log("train/grad_norm", norm, batch_size=1)
