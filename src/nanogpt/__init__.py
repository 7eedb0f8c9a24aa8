"""nanogpt: train GPT language models with PyTorch Lightning and Hydra.

The data flow, one wing (package) per concern, imports running one way (cli -> training -> sweeps,
hf and the tools -> runs -> the core: model, data, metrics, options)::

    cli.train (nanogpt-train: Hydra composes the config)
      ──> training.job.train(cfg)
            spec: prepare the run (the corpus via data: sources -> encode -> corpus, the model's
                  GPTConfig, init_from's weights, compile) and derive its RunSpec, once
            record: the run folder (runs.folder) gets config.yaml and result.json
            build: data.datamodule (windows -> batches), module (model.GPT, loss, metrics,
                   optimizers, schedule), callbacks (console, loop, checkpoints, curves, bleu,
                   grad_norm, throughput), loggers; then Lightning's Trainer.fit
            validation: best.ckpt on the whole val split
      ──> the run folder: checkpoints (read back by runs.checkpoint), logs, result.json
      ──> sweeps (nanogpt-train -m: sweeps.callback reports after every job through runs.report)

``sample``, ``evaluate`` and ``hf.export`` read a checkpoint back through ``runs.checkpoint``,
without Lightning; ``cli`` holds their console scripts too.
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
