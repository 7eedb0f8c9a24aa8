"""How good a model is, beyond its loss.

``bleu`` is the BLEU recipe (plain PyTorch and torchmetrics, shared by training and
``nanogpt-eval``); ``bleu_callback`` logs it during training. ``bpc`` turns a per-token loss into
bits per character. ``grad_norm`` logs the gradient norm, a training diagnostic.
"""
