"""OPT: parity with HF OPTForCausalLM / OPTModel on random tiny models (float32), generation with
the same tokens, Meta's published folder layout, refusals by name, and the HF export round trip."""

import json

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert import hf_opt
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.models import OPT

transformers = pytest.importorskip("transformers")
TOL = 1e-4
V = 97


def _hf_config(**kw):
    base = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
    )
    return transformers.OPTConfig(**{**base, **kw})


def _perturb(model, scale=0.1):
    """Weights further from their init (LayerNorm gains and biases too), so that every one matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def _opt(tmp_path, arch="OPTForCausalLM", **kw):
    torch.manual_seed(0)
    ref = _perturb(getattr(transformers, arch)(_hf_config(**kw))).eval()
    return ref, vlkit.from_pretrained(save_hf(ref, tmp_path / "hf"))


@pytest.mark.parametrize("tie", [True, False])
def test_logits_parity(tmp_path, tie):
    ref, model = _opt(tmp_path, tie_word_embeddings=tie)
    assert isinstance(model, OPT) and (model.lm_head is None) == tie
    ids = torch.randint(3, V, (2, 13))
    with torch.no_grad():
        assert max_diff(model(ids), ref(ids).logits) <= TOL


def test_opt_model_hidden_states_parity(tmp_path):
    ref, model = _opt(tmp_path, "OPTModel")
    ids = torch.randint(3, V, (2, 13))
    with torch.no_grad():
        assert max_diff(model.hidden_states(ids), ref(ids).last_hidden_state) <= TOL


def test_left_padded_logits_parity(tmp_path):
    """Positions count the real tokens of the mask, as HF does: a left-padded row gives its
    unpadded logits, and HF's at every real position."""
    ref, model = _opt(tmp_path)
    ids = torch.randint(3, V, (2, 9))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 1, 0
    with torch.no_grad():
        got = model(ids, attention_mask=mask)
        expected = ref(ids, attention_mask=mask).logits
        alone = model(ids[1:, 3:])
    assert max_diff(got[0], expected[0]) <= TOL and max_diff(got[1, 3:], expected[1, 3:]) <= TOL
    assert max_diff(got[1, 3:], alone[0]) <= TOL


def test_inputs_embeds_equal_ids(tmp_path):
    _, model = _opt(tmp_path)
    ids = torch.randint(3, V, (2, 7))
    with torch.no_grad():
        by_ids = model.hidden_states(ids)
        by_embeds = model.hidden_states(inputs_embeds=model.embed_tokens(ids))
    assert torch.equal(by_ids, by_embeds)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model.hidden_states(ids, inputs_embeds=model.embed_tokens(ids))


def test_greedy_generation_identical(tmp_path):
    ref, model = _opt(tmp_path)
    ids = torch.randint(3, V, (2, 5))
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=1)
        got = model.generate(ids, max_new_tokens=20, eos_token_id=None)
    assert torch.equal(got, expected)


def test_beam_search_identical(tmp_path):
    ref, model = _opt(tmp_path)
    torch.manual_seed(3)
    ids = torch.randint(3, V, (3, 4))
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False, eos_token_id=2, pad_token_id=1)
        got = model.generate(ids, max_new_tokens=10, num_beams=3)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_equals_each_row(tmp_path, num_beams):
    ref, model = _opt(tmp_path)
    torch.manual_seed(4)
    ids = torch.randint(3, V, (2, 7))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 1, 0
    kw = dict(max_new_tokens=8, num_beams=num_beams, eos_token_id=None)
    with torch.no_grad():
        batch = model.generate(ids, attention_mask=mask, **kw)
        expected = ref.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=1, **kw)
        rows = [model.generate(ids[:1], **kw)[0], model.generate(ids[1:, 3:], **kw)[0]]
    assert torch.equal(batch, expected)
    assert torch.equal(batch[0], rows[0]) and torch.equal(batch[1, 3:], rows[1])


def test_meta_published_layout(tmp_path):
    """facebook/opt-* folders: OPTModel's bare ``decoder.`` keys under OPTForCausalLM, the tied
    head written out as ``lm_head.weight``."""
    from safetensors.torch import save_file

    ref, model = _opt(tmp_path)
    state = {k.removeprefix("model."): v.contiguous() for k, v in ref.state_dict().items()}
    state["lm_head.weight"] = state["decoder.embed_tokens.weight"].clone()
    folder = tmp_path / "meta"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    back = vlkit.from_pretrained(folder)
    assert back.lm_head is None
    ids = torch.randint(3, V, (1, 6))
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_untied_config_with_the_embedding_as_head_loads_tied(tmp_path):
    """An exporter that writes the tied head out under tie_word_embeddings=False (transformers'
    LLaVA needs OPT untied) reads back as the tied model it is."""
    torch.manual_seed(0)
    ref = _perturb(transformers.OPTForCausalLM(_hf_config(tie_word_embeddings=False))).eval()
    with torch.no_grad():
        ref.lm_head.weight.copy_(ref.model.decoder.embed_tokens.weight)
    model = vlkit.from_pretrained(save_hf(ref, tmp_path / "hf"))
    assert model.lm_head is None and model.config.tie_word_embeddings
    ids = torch.randint(3, V, (2, 7))
    with torch.no_grad():
        assert max_diff(model(ids), ref(ids).logits) <= TOL


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("do_layer_norm_before", False, "do_layer_norm_before=False"),
        ("word_embed_proj_dim", 16, "word_embed_proj_dim 16 != hidden_size 32"),
        ("activation_function", "gelu", "activation 'gelu'"),
    ],
)
def test_unsupported_variants_refused_by_name(field, value, named):
    hf = {**_hf_config().to_dict(), field: value}
    with pytest.raises(ValueError, match=named):
        hf_opt.config_from_hf(hf, {})


def test_presets():
    with torch.device("meta"):
        assert vlkit.create_model("opt-125m").num_parameters() == 125_239_296  # facebook/opt-125m
        big = vlkit.create_model("opt-2.7b")
    assert (big.config.hidden_size, big.config.num_layers, big.config.intermediate_size) == (2560, 32, 10240)
    tiny = vlkit.create_model("opt-tiny")
    ids = torch.randint(3, 1000, (1, 4))
    assert tiny.generate(ids, max_new_tokens=3, eos_token_id=None).shape == (1, 7)


def test_save_hf_round_trip(tmp_path):
    """vlkit OPT -> save_hf -> transformers OPTForCausalLM gives vlkit's logits; the tokenizer is GPT-2's."""
    from pathlib import Path

    from vlkit.tokenizers import BPETokenizer

    corpus = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8").splitlines()
    tok = BPETokenizer.train(corpus, 300)
    for tie in (True, False):
        torch.manual_seed(0)
        model = _perturb(vlkit.create_model("opt-tiny", vocab_size=tok.vocab_size, tie_word_embeddings=tie)).eval()
        out = export_hf(model, tmp_path / f"hf-{tie}", tokenizer=tok)
        assert json.loads((out / "config.json").read_text())["architectures"] == ["OPTForCausalLM"]
        ref = transformers.OPTForCausalLM.from_pretrained(str(out)).eval()
        ids = torch.randint(3, tok.vocab_size, (2, 10))
        with torch.no_grad():
            assert max_diff(ref(ids).logits, model(ids)) <= TOL
        assert type(transformers.AutoTokenizer.from_pretrained(str(out))).__name__ == "GPT2Tokenizer"
        back = vlkit.from_pretrained(out)
        assert (back.lm_head is None) == tie
        with torch.no_grad():
            assert torch.equal(back(ids), model(ids))
