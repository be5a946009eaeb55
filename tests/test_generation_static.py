"""The static KV cache and the compiled decoding step give the tokens of the dynamic cache, for
every decoder family (GPT-2, OPT, Llama, BLIP's text decoder, and BLIP-2 and the VLM that drive an
LLM through its embeddings): greedy, sampling with a fixed seed, beam search, left-padded batches.
Also: a list of end tokens stops a row at any of them."""

from __future__ import annotations

import functools

import pytest
import torch

import vlkit
from vlkit.layers import StaticKVCache
from vlkit.models import GenerationConfig
from vlkit.models.generation import CachedStep

MODES = {"greedy": {}, "sample": {"do_sample": True, "top_k": 20}, "beam": {"num_beams": 3}}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = vlkit.create_model(name).eval()
    with torch.no_grad():  # off the init, so that the choices are clear
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _prompts(vocab: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts (3, 6): lengths 4, 5 and 6."""
    ids = torch.randint(5, vocab - 1, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0
    mask[1, :1] = 0
    return ids.masked_fill(mask == 0, 1), mask


def _run(name: str, model, options: dict, copies: int = 1) -> torch.Tensor:
    """generate on the family's inputs (each row ``copies`` times); sampling from a fixed seed."""
    options = {"max_new_tokens": 7, "generator": torch.Generator().manual_seed(3), "eos_token_id": None, **options}
    ids, mask = (t.repeat(copies, 1) for t in _prompts())
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)).repeat(copies, 1, 1, 1)
    if name in ("gpt-tiny", "opt-tiny", "llama-tiny"):
        return model.generate(ids, attention_mask=mask, **options)
    if name == "blip-tiny":
        return model.generate(pixels, **options)
    if name == "blip2-tiny":
        return model.generate(pixels, ids, attention_mask=mask, **options)
    image = torch.full((ids.shape[0], 1), model.config.image_token_id)  # vlm-tiny: the image token once per row
    return model.generate(pixels, torch.cat([image, ids], 1), attention_mask=torch.cat([mask[:, :1], mask], 1), **options)  # fmt: skip


FAMILIES = ["gpt-tiny", "opt-tiny", "llama-tiny", "blip-tiny", "blip2-tiny", "vlm-tiny"]


@pytest.mark.parametrize("name", FAMILIES)
def test_static_cache_gives_the_dynamic_tokens(name):
    model = _model(name)
    for mode, options in MODES.items():
        dynamic = _run(name, model, options)
        static = _run(name, model, {**options, "static_cache": True})
        assert torch.equal(dynamic, static), (name, mode)
    # and an end token stops rows on both caches alike
    row = dynamic[0, -4].item()
    with_eos = [_run(name, model, {"eos_token_id": row, "static_cache": s}) for s in (False, True)]
    assert torch.equal(*with_eos)


@pytest.fixture
def dynamo_only(monkeypatch):
    """torch.compile with the "eager" backend: dynamo's full-graph capture (a graph break or a
    host sync in the step raises) without inductor's C++ builds, which take minutes here."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_step_is_one_graph_and_gives_the_eager_tokens(name, dynamo_only):
    """Greedy and sampling on 6 rows and 2 beams on 3 prompts share one graph (6 rows, same capacity)."""
    model = _model(name)
    for mode, copies in (("greedy", 2), ("sample", 2), ("beam", 1)):
        options = MODES[mode] if mode != "beam" else {"num_beams": 2}
        eager = _run(name, model, options, copies)
        assert torch.equal(eager, _run(name, model, {**options, "compile": True}, copies)), (name, mode)


def test_inductor_compiled_llama_gives_the_eager_tokens(monkeypatch):
    """One real compile (inductor's C++ on the CPU, which also functionalises the in-place cache
    writes): greedy and sampling share the graph."""
    import tempfile
    from pathlib import Path

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(Path(tempfile.gettempdir()) / "vlkit-test-inductor"))
    torch._dynamo.reset()
    model = _model("llama-tiny")
    for mode in ("greedy", "sample"):
        eager = _run("llama-tiny", model, MODES[mode])
        assert torch.equal(eager, _run("llama-tiny", model, {**MODES[mode], "compile": True})), mode
    torch._dynamo.reset()


def test_static_cache_writes_in_place_and_refuses_overflow():
    model = _model("gpt-tiny")
    cache = StaticKVCache(model.config.num_layers, max_new_tokens=3, multiple=8)
    step = CachedStep(model._next_logits, cache)
    ids = torch.randint(5, 999, (2, 4), generator=torch.Generator().manual_seed(0))
    step(ids)
    assert cache.length == 4 and cache.capacity == 8  # 4 + 3 rounded up to 8
    keys = cache[0].self_kv[0]
    for _ in range(4):
        step(ids[:, :1])
    assert cache[0].self_kv[0].data_ptr() == keys.data_ptr() and cache.length == 8
    full = StaticKVCache(model.config.num_layers, max_new_tokens=0, multiple=4)
    model.hidden_states(ids, cache=full)  # fills its 4 positions
    with pytest.raises(ValueError, match="holds 4 positions; 5 were asked for"):
        model.hidden_states(ids[:, :1], cache=full)


def test_end_token_list():
    config = GenerationConfig(eos_token_id=[5, 7])
    assert config.eos_token_id == (5, 7)
    for bad in ([], [3, -1], [3, "x"]):
        with pytest.raises(ValueError, match="eos_token_id must be"):
            GenerationConfig(eos_token_id=bad)
    model = _model("gpt-tiny")
    ids, mask = _prompts()
    free = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=None)
    new = free[:, 6:]
    ends = [new[0, 2].item(), new[1, 4].item()]  # row 0 ends at its 3rd token at the latest, row 1 at its 5th
    for beams in (1, 3):
        out = model.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=ends, pad_token_id=0,
                             num_beams=beams)  # fmt: skip
        if beams > 1:
            continue  # beam search: only that it runs with a list
        for r in range(3):
            hits = [i for i, t in enumerate(new[r].tolist()) if t in ends]
            stop = hits[0] + 1 if hits else 8
            assert torch.equal(out[r, 6 : 6 + stop], new[r, :stop])
            assert (out[r, 6 + stop :] == 0).all()
        assert out.shape[1] <= free.shape[1]
    # min_new_tokens forbids every end token
    out = model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, eos_token_id=[new[0, 0].item()])
    assert out.shape[1] == 10 and (out[:, 6:] != new[0, 0]).all()


def test_options_and_cli_flags():
    import argparse

    from vlkit.cli.generation_options import add_generation_arguments, generation_config_from_args

    p = argparse.ArgumentParser()
    add_generation_arguments(p, beams=3, max_new=20, min_length=5)
    assert generation_config_from_args(p.parse_args([])).static_cache is False
    assert generation_config_from_args(p.parse_args(["--static-cache"])).static_cache is True
    assert generation_config_from_args(p.parse_args(["--compile"])).compile is True
    with pytest.raises(TypeError, match="compile must be True or False"):
        GenerationConfig(compile="yes")
    with pytest.raises(ValueError, match="needs a StaticKVCache"):
        CachedStep(lambda *a, **k: None, vlkit.layers.KVCache(1), compile=True)
