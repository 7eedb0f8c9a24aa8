import pytest
import torch

from nanogpt.model import GPT, GPTConfig, sample_next, top_p_filter


def tiny(block_size: int = 16) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(block_size=block_size, vocab_size=11, n_layer=2, n_head=4, n_embd=32)
    # float64, so rounding differences between the two paths can never flip an argmax
    return GPT(config).eval().double()


@pytest.mark.parametrize("prompt_len,new_tokens", [(1, 10), (5, 11), (3, 40), (16, 20), (30, 25)])
def test_cached_generation_equals_full_recomputation(prompt_len, new_tokens):
    model = tiny(block_size=16)  # most cases cross block_size, some start beyond it
    idx = torch.randint(0, 11, (3, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    greedy = model.generate(idx, new_tokens, temperature=0)
    assert torch.equal(greedy, model.generate(idx, new_tokens, temperature=0, use_cache=False))
    assert greedy.shape == (3, prompt_len + new_tokens) and torch.equal(greedy[:, :prompt_len], idx)

    sampled = [
        model.generate(idx, new_tokens, top_k=5, generator=torch.Generator().manual_seed(7), use_cache=c)
        for c in (True, False)
    ]
    assert torch.equal(*sampled)


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_the_smallest_contexts_still_generate(block_size):
    model = tiny(block_size=block_size)
    idx = torch.randint(0, 11, (2, 4))
    out = model.generate(idx, 9, temperature=0)
    assert out.shape == (2, 13) and torch.equal(out, model.generate(idx, 9, temperature=0, use_cache=False))


def test_generation_under_bf16_autocast_caches_in_bf16_and_matches_a_plain_forward():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=2, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 11, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        full, _ = model(idx)
        caches = model.new_caches()
        steps = [model(idx[:, :5], caches=caches)[0]]
        steps += [model(idx[:, t : t + 1], caches=caches)[0] for t in range(5, 12)]
        out = model.generate(idx[:, :3], 12, temperature=0)
    # the cache holds keys in the dtype autocast gave them, not float32 buffers written in bf16
    assert caches[0].k.dtype == torch.bfloat16
    torch.testing.assert_close(torch.cat(steps, dim=1).float(), full.float(), atol=3e-2, rtol=3e-2)
    assert out.shape == (2, 15) and torch.equal(out[:, :3], idx[:, :3])


def test_the_same_seed_gives_the_same_tokens_and_another_seed_others():
    model = tiny()
    idx = torch.zeros(2, 1, dtype=torch.long)

    def run(seed: int) -> torch.Tensor:
        return model.generate(idx, 30, temperature=1.5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_top_k_1_is_greedy():
    model = tiny()
    idx = torch.randint(0, 11, (4, 3))
    greedy = model.generate(idx, 25, temperature=0)
    assert torch.equal(model.generate(idx, 25, temperature=0.7, top_k=1), greedy)


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.5) == [True, False, False, False]  # 0.5 alone reaches 0.5
    assert kept(0.6) == [True, False, True, False]  # 0.5 + 0.3
    assert kept(0.8) == [True, False, True, False]  # exactly 0.8 is reached
    assert kept(0.81) == [True, False, True, True]
    assert kept(1.0) == [True, True, True, True]
    assert kept(0.01) == [True, False, False, False]  # the top token always stays
    # and sampling never picks a filtered token
    draws = sample_next(logits.expand(500, 4), top_p=0.6, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == {0, 2}


def test_on_token_streams_each_new_column():
    model = tiny()
    idx = torch.randint(0, 11, (2, 4))
    seen = []
    out = model.generate(idx, 6, temperature=0, on_token=seen.append)
    assert [t.shape for t in seen] == [(2, 1)] * 6
    assert torch.equal(torch.cat(seen, dim=1), out[:, 4:])
    assert torch.equal(torch.cat(list(model.stream(idx, 6, temperature=0)), dim=1), out[:, 4:])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": -0.5}, r"temperature must be > 0, or 0 for greedy decoding; got temperature=-0.5"),
        ({"top_k": 0}, r"top_k must be an integer >= 1, or null to keep every token; got top_k=0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], or null to keep every token; got top_p=0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\].*got top_p=1.5"),
    ],
)
def test_bad_sampling_settings_name_the_option(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny().generate(torch.zeros(1, 1, dtype=torch.long), 3, **kwargs)


def test_an_empty_prompt_tensor_is_refused():
    with pytest.raises(ValueError, match="the prompt is empty; pass at least one token"):
        tiny().generate(torch.zeros(1, 0, dtype=torch.long), 3)
