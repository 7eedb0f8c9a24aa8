"""How good a model is, beyond its loss; plain functions, no training loop.

``bleu`` is the BLEU and chrF recipe (fixed val prompts, greedy continuations, sacrebleu), shared by
training's ``val/bleu`` callback and ``nanogpt-eval``; ``chrf`` is chrF2 as sacrebleu computes it;
``bpc`` turns a per-token loss into bits per character; ``flops`` counts a training token's FLOPs.
"""
