"""nanogpt: train GPT language models with PyTorch Lightning and Hydra.

The data flow, one module (or package) per step::

    text ──data (sources -> encode -> corpus, driven by prepare)──> token files ──data.windows──>
      batches ──data.datamodule──> DataModule
      ──> model.GPT (plain PyTorch) inside lightning_module (loss, val/ppl, optimizer from
          optimizers, schedule)
      ──> Lightning's Trainer, built by train from the config derive fills in (devices checks it),
          with callbacks: console (progress, summary), loop (last-step validation, NaN stop), metrics
          (val/bleu, val/chrf, train/grad_norm), runs.checkpoints (last.ckpt, RNG state), runs.curves
          (loss.png)
      ──> the run folder (run_dir: its layout and result.json): checkpoints (written by
          runs.checkpoints, read by checkpoint), logs (loggers: CSV, TensorBoard, W&B), the run
          record (runs.record)
      ──> sweep reports (runs.sweep after every job of -m, runs.report for nanogpt-report)

``sample`` and ``evaluate`` read a checkpoint back through ``checkpoint`` without Lightning.
"""

from pathlib import Path

__version__ = "0.1.0"


def _config_dir() -> str:
    packaged = Path(__file__).parent / "configs"  # a wheel carries them here
    if packaged.is_dir():
        return str(packaged)
    return str(Path(__file__).resolve().parents[2] / "configs")  # a source checkout


# The Hydra config folder, for hydra.main and for compose() in tests, scripts and notebooks.
CONFIG_DIR = _config_dir()
