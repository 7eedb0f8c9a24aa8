"""nanogpt: train GPT language models with PyTorch Lightning and Hydra.

Data flow: ``data.prepare`` turns a text file into token memmaps, ``data.datamodule`` streams
windows from them, ``lightning_module`` wraps the plain-PyTorch ``model`` with loss, metrics and
the optimizer, and ``train`` composes it all from Hydra configs.
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
