"""GPT decoding on the KV cache: cached = uncached logits, and the sampling filters."""
import pytest
import torch

import vlkit
from vlkit.layers import KVCache
from vlkit.models.generation import _warp


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return vlkit.create_model("gpt-tiny", dropout=0.0).eval()


def test_cached_and_uncached_logits_equal(gpt):
    ids = torch.randint(1, 1000, (2, 12))
    with torch.no_grad():
        full = gpt(ids)  # (B, T, V)
        cache = KVCache(gpt.config.num_layers)
        steps = [gpt.logits(gpt.hidden_states(ids[:, :5], cache=cache))]
        for t in range(5, 12):
            steps.append(gpt.logits(gpt.hidden_states(ids[:, t : t + 1], cache=cache)))
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5


def test_greedy_generate_equals_argmax_loop_without_cache(gpt):
    ids = torch.randint(1, 1000, (2, 4))
    out = gpt.generate(ids, max_new_tokens=8, eos_token_id=None)
    ref = ids
    with torch.no_grad():
        for _ in range(8):
            ref = torch.cat([ref, gpt(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    assert torch.equal(out[:, :4], ids)  # prompt first


def test_eos_stops_and_pads(gpt):
    ids = torch.randint(1, 1000, (1, 3))
    first = gpt.generate(ids, max_new_tokens=1, eos_token_id=None)[0, -1].item()
    out = gpt.generate(ids, max_new_tokens=10, eos_token_id=first)
    assert out.shape == (1, 4) and out[0, -1].item() == first


def test_sampling_reproducible_and_respects_top_k(gpt):
    ids = torch.randint(1, 1000, (3, 4))
    a = gpt.generate(ids, 10, do_sample=True, top_k=5, generator=torch.Generator().manual_seed(0), eos_token_id=None)
    b = gpt.generate(ids, 10, do_sample=True, top_k=5, generator=torch.Generator().manual_seed(0), eos_token_id=None)
    assert torch.equal(a, b)
    with torch.no_grad():
        logits = gpt(a[:, :-1])[:, 3:]  # the distributions the new tokens were drawn from
    top5 = logits.topk(5, dim=-1).indices
    assert (top5 == a[:, 4:, None]).any(-1).all()


def test_warp_known_answers():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda s: torch.isfinite(s)[0].tolist()  # noqa: E731
    assert kept(_warp(logits, 1.0, 2, 1.0)) == [True, True, False, False]
    assert kept(_warp(logits, 1.0, 0, 0.7)) == [True, True, False, False]  # 0.5 + 0.3 >= 0.7
    assert kept(_warp(logits, 1.0, 0, 0.5)) == [True, False, False, False]
    assert kept(_warp(logits, 1.0, 0, 0.81)) == [True, True, True, False]
    assert kept(_warp(logits, 1.0, 0, 1.0)) == [True] * 4
    hot = _warp(logits, 0.5, 0, 1.0).softmax(-1)
    assert hot[0, 0] > 0.5  # lower temperature sharpens


def test_generate_errors(gpt):
    with pytest.raises(ValueError, match="positions"):
        gpt.generate(torch.ones(1, 100, dtype=torch.long), max_new_tokens=100)
    with pytest.raises(ValueError, match="non-empty"):
        gpt.generate(torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        gpt.generate(torch.ones(1, 2, dtype=torch.long), 2, do_sample=True, temperature=0.0)
