"""nanogpt: train GPT language models with PyTorch Lightning and Hydra.

Data flow: ``data.prepare`` turns a text file into token memmaps, ``data.datamodule`` streams
windows from them, ``lightning_module`` wraps the plain-PyTorch ``model`` with loss, metrics and
the optimizer, and ``train`` composes it all from Hydra configs.
"""

__version__ = "0.1.0"
