"""Parity with HF transformers on random tiny models, float32: max abs diff <= 1e-5."""

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.models import GPT, BertModel, ViT

transformers = pytest.importorskip("transformers")
TOL = 1e-5


def _bert_config(**kw):
    return transformers.BertConfig(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **kw,
    )


@pytest.mark.parametrize("arch", ["BertModel", "BertForPreTraining", "BertForMaskedLM"])
def test_bert_parity(tmp_path, arch):
    torch.manual_seed(0)
    ref = getattr(transformers, arch)(_bert_config()).eval()
    model = vlkit.from_pretrained(save_hf(ref, tmp_path))
    assert isinstance(model, BertModel)
    ids = torch.randint(0, 120, (3, 11))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    types = torch.randint(0, 2, (3, 11))
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        hidden = model.encode(ids, attention_mask=mask, token_type_ids=types)
    assert max_diff(hidden, out.hidden_states[-1]) <= TOL
    if arch == "BertModel":
        assert max_diff(model.pool(hidden), out.pooler_output) <= TOL
    else:
        assert (
            max_diff(model.mlm_logits(hidden), out.prediction_logits if arch == "BertForPreTraining" else out.logits)
            <= TOL
        )
    if arch == "BertForPreTraining":
        assert max_diff(model.nsp_logits(hidden), out.seq_relationship_logits) <= TOL


def _gpt2(tmp_path, arch="GPT2LMHeadModel", eos_bias=0.0):
    """A random tiny GPT-2 and vlkit's load of it; ``eos_bias`` > 0 shifts the final norm towards
    the end token's embedding so that it is the best token at every step."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2, pad_token_id=0
    )
    ref = getattr(transformers, arch)(cfg).eval()
    if eos_bias:
        with torch.no_grad():
            w = ref.transformer.wte.weight[2]
            ref.transformer.ln_f.bias += eos_bias * w / w.norm()
    return ref, vlkit.from_pretrained(save_hf(ref, tmp_path))


def test_gpt2_logits_parity(tmp_path):
    ref, model = _gpt2(tmp_path)
    assert isinstance(model, GPT)
    ids = torch.randint(3, 97, (2, 13))
    with torch.no_grad():
        assert max_diff(model(ids), ref(ids).logits) <= TOL


def test_gpt2_model_parity(tmp_path):
    ref, model = _gpt2(tmp_path, "GPT2Model")
    ids = torch.randint(3, 97, (2, 13))
    with torch.no_grad():
        assert max_diff(model.hidden_states(ids), ref(ids).last_hidden_state) <= TOL


def test_gpt2_greedy_generation_identical(tmp_path):
    ref, model = _gpt2(tmp_path)
    ids = torch.randint(3, 97, (2, 5))
    with torch.no_grad():
        expected = ref.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
        got = model.generate(ids, max_new_tokens=20, eos_token_id=None)
    assert torch.equal(got, expected)


def test_gpt2_left_padded_generation_identical(tmp_path):
    ref, model = _gpt2(tmp_path)
    ids = torch.randint(3, 97, (2, 6))
    mask = torch.ones_like(ids)
    ids[1, :2], mask[1, :2] = 0, 0
    with torch.no_grad():
        expected = ref.generate(
            ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )
        got = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_gpt2_beam_search_identical(tmp_path, length_penalty):
    ref, model = _gpt2(tmp_path)
    torch.manual_seed(3)
    ids = torch.randint(3, 97, (3, 4))
    with torch.no_grad():
        expected = ref.generate(
            ids,
            max_new_tokens=10,
            num_beams=4,
            do_sample=False,
            eos_token_id=2,
            pad_token_id=0,
            length_penalty=length_penalty,
        )
        got = model.generate(
            ids, max_new_tokens=10, num_beams=4, eos_token_id=2, pad_token_id=0, length_penalty=length_penalty
        )
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_gpt2_end_token_right_at_the_minimum_length(tmp_path, num_beams):
    ref, model = _gpt2(tmp_path, eos_bias=12.0)
    ids = torch.randint(3, 97, (3, 4))
    for opts, new_tokens in ((dict(), 1), (dict(min_new_tokens=3), 4), (dict(min_length=4 + 2), 3)):
        kw = dict(max_new_tokens=8, num_beams=num_beams, eos_token_id=2, pad_token_id=0, **opts)
        with torch.no_grad():
            expected = ref.generate(ids, do_sample=False, **kw)
            got = model.generate(ids, **kw)
        assert torch.equal(got, expected)
        assert got.shape == (3, 4 + new_tokens) and (got[:, -1] == 2).all() and not (got[:, 4:-1] == 2).any()


def test_vit_parity(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
    )
    ref = transformers.ViTModel(cfg).eval()
    model = vlkit.from_pretrained(save_hf(ref, tmp_path))
    assert isinstance(model, ViT)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = ref(pixel_values=x)
        hidden = model.encode(x)
    assert hidden.shape == (2, 1 + 16, 32)
    assert max_diff(hidden, out.last_hidden_state) <= TOL
    assert max_diff(model.pool(hidden), out.pooler_output) <= TOL
