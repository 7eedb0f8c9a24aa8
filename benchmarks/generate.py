"""Generation speed: the KV cache against recomputing the whole context at every step.

Builds the ``shakespeare_char`` model shape (6 layers, 6 heads, 384 channels, context 256, 65
tokens; random weights, or a checkpoint's), generates the same tokens three ways and prints a table:

- ``kv cache``: one prefill, then one token per step (``GPT.generate``);
- ``recompute, same context``: ``use_cache=False``, the same contexts re-read from scratch each step
  (the reference the cache is tested against; identical tokens);
- ``recompute, sliding window``: nanoGPT's loop, the last ``block_size`` tokens every step.

    python -m benchmarks generate                       # 500 tokens, 1 CPU thread
    python -m benchmarks generate --ckpt runs/shakespeare_char/<time> --device cuda
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.suites import parser
from benchmarks.table import markdown
from nanogpt.model import GPT, GPTConfig, sample_next
from nanogpt.runs.checkpoint import load_checkpoint


def sliding_window(
    model: GPT, idx: torch.Tensor, n: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    bs = model.config.block_size
    for _ in range(n):
        logits, _ = model(idx[:, -bs:])
        next_ids = sample_next(logits[:, -1, :], 1.0, None, None, generator)
        idx = torch.cat((idx, next_ids), dim=1)
        yield next_ids


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(
    run: Callable[[], Iterator[torch.Tensor]], device: torch.device
) -> tuple[float, float, torch.Tensor]:
    """Seconds to the first token, seconds in all, and the tokens."""
    sync(device)
    t0 = time.perf_counter()
    tokens, first = [], None
    for next_ids in run():
        if first is None:
            sync(device)
            first = time.perf_counter() - t0
        tokens.append(next_ids)
    sync(device)
    return first, time.perf_counter() - t0, torch.cat(tokens, dim=1)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    cli = parser("generate", __doc__)
    cli.add_argument("--ckpt", help="a checkpoint or run folder; default: random shakespeare_char weights")
    cli.add_argument("--new-tokens", type=int, default=500)
    cli.add_argument("--prompt-tokens", type=int, default=1)
    cli.add_argument("--batch-size", type=int, default=1)
    cli.add_argument("--device", default="cpu")
    cli.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    cli.add_argument("--seed", type=int, default=1337)
    args = cli.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.ckpt:
        model, _, _ = load_checkpoint(args.ckpt, device)
    else:
        torch.manual_seed(0)
        config = GPTConfig(block_size=256, vocab_size=65, n_layer=6, n_head=6, n_embd=384, dropout=0.0)
        model = GPT(config).to(device).eval()
    cfg = model.config
    prompt = torch.zeros(args.batch_size, args.prompt_tokens, dtype=torch.long, device=device)

    def gen() -> torch.Generator:
        return torch.Generator(device).manual_seed(args.seed)

    n = args.new_tokens
    runs = {
        "kv cache": lambda: model.stream(prompt, n, generator=gen()),
        "recompute, same context": lambda: model.stream(prompt, n, generator=gen(), use_cache=False),
        "recompute, sliding window": lambda: sliding_window(model, prompt, n, gen()),
    }
    timed(lambda: model.stream(prompt, 8, generator=gen()), device)  # warm-up
    results = {name: timed(run, device) for name, run in runs.items()}
    assert torch.equal(results["kv cache"][2], results["recompute, same context"][2]), (
        "cache changed the tokens"
    )

    print(
        f"{model.num_params() / 1e6:.1f}M parameters (n_layer={cfg.n_layer}, n_head={cfg.n_head}, "
        f"n_embd={cfg.n_embd}, block_size={cfg.block_size}); {n} new tokens after a "
        f"{args.prompt_tokens}-token "
        f"prompt, batch {args.batch_size}, {device}"
        + (f", {args.threads} thread(s)" if device.type == "cpu" else "")
    )
    cached_total = results["kv cache"][1]
    rows = [
        (
            name,
            f"{n * args.batch_size / total:.1f}",
            f"{first * 1e3:.1f}",
            f"{total:.2f}",
            f"{total / cached_total:.1f}x",
        )
        for name, (first, total, _) in results.items()
    ]
    print(markdown(["method", "tokens/s", "first token ms", "total s", "speed-up"], rows, right=range(1, 5)))
    print("(speed-up: how much longer than the kv cache a method takes)")
