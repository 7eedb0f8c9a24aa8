"""What each model component and Muon cost per training step, at the CPU recipe's shape.

Builds the ``shakespeare_char_cpu`` model (4 layers, 4 heads, 128 channels, context 64, 65 tokens,
no biases) once per choice of ``configs/ablation/`` (and the ``gpt_modern`` preset), each with its
optimizer, and times full training steps on the same batch of 12 windows: forward, backward,
clipping, the optimizer's step. The choices are timed in turn, round after round and in a new
random order each round, so a machine that slows down (other work, heat) slows them all alike; the
table gives each one's median over the rounds and its ratio to GPT-2 with AdamW. The ratio is what
carries over between machines and days.

    python -m benchmarks components                    # 1 CPU thread, 8 rounds of 25 steps
    python -m benchmarks components --threads 2 --rounds 12
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from benchmarks.stats import Spread, alternate
from benchmarks.suites import parser
from benchmarks.table import markdown
from nanogpt import CONFIG_DIR
from nanogpt.model import GPT, GPTConfig
from nanogpt.optimizers import adamw, muon

SHAPE = dict(block_size=64, vocab_size=65, n_layer=4, n_head=4, n_embd=128, bias=False, dropout=0.0)
# the components of model=gpt_modern, whose shape is SHAPE's
MODERN = {
    key: value
    for key, value in OmegaConf.load(Path(CONFIG_DIR) / "model" / "gpt_modern.yaml").items()
    if key not in (*SHAPE, "defaults")
}
# name: (model fields over SHAPE, optimizer): the ablation's choices, then the presets
CHOICES = {
    "gpt2": ({}, "adamw"),
    "rope": (dict(position="rope"), "adamw"),
    "rmsnorm": (dict(norm="rmsnorm"), "adamw"),
    "rmsnorm, no gain": (dict(norm="rmsnorm", norm_gain=False), "adamw"),
    "qk_norm": (dict(qk_norm=True), "adamw"),
    "relu2": (dict(mlp="relu2"), "adamw"),
    "swiglu": (dict(mlp="swiglu"), "adamw"),
    "gqa (n_kv_head=2)": (dict(n_kv_head=2), "adamw"),
    "softcap": (dict(logit_softcap=15.0), "adamw"),
    "untied": (dict(tie_weights=False), "adamw"),
    "muon": ({}, "muon"),
    "gpt_modern, adamw": (MODERN, "adamw"),
    "gpt_modern + muon": (MODERN, "muon"),
}


def build(fields: dict, optimizer: str) -> tuple[GPT, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, **fields))
    groups = model.param_groups()
    if optimizer == "muon":
        return model, muon(groups, lr=6e-3, matrix_lr=0.02, betas=(0.9, 0.99))
    return model, adamw(groups, lr=6e-3, betas=(0.9, 0.99), weight_decay=0.1)


def main(argv: list[str] | None = None) -> None:
    cli = parser("components", __doc__)
    cli.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    cli.add_argument("--rounds", type=int, default=8, help="rounds over every choice (default 8)")
    cli.add_argument("--steps", type=int, default=25, help="training steps per choice per round (default 25)")
    args = cli.parse_args(argv)
    torch.set_num_threads(args.threads)
    built = {name: build(*choice) for name, choice in CHOICES.items()}
    x = torch.randint(0, SHAPE["vocab_size"], (12, SHAPE["block_size"]))  # (B, T): the recipe's batch

    def ms_per_step(name: str, r: int) -> float:
        model, optimizer = built[name]
        start = time.perf_counter()
        for _ in range(args.steps):
            _, loss = model(x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - start) / args.steps * 1000

    # one untimed round warms up the allocator and kernels
    ms = alternate(list(CHOICES), args.rounds, ms_per_step, shuffle=random.Random(0), warmup=1)
    base = statistics.median(ms["gpt2"])
    print(f"training step, CPU recipe shape (batch 12 x 64), {args.threads} thread(s), {args.rounds} rounds")
    rows = []
    for name, times in ms.items():
        spread = Spread.of(times)
        n = sum(p.numel() for p in built[name][0].parameters())
        rows.append((name, f"{n:,}", f"{spread.median:.1f}", spread.range(1), f"{spread.median / base:.2f}"))
    print(markdown(["choice", "parameters", "ms/step (median)", "min-max", "x GPT-2 + AdamW"], rows))
