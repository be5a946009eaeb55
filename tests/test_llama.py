"""vlkit Llama against HF transformers' LlamaForCausalLM (and Qwen2, Mistral) with random weights."""

from __future__ import annotations

import json

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.models import Llama, LlamaConfig

transformers = pytest.importorskip("transformers")

LOGITS_TOL = 1e-4
V = 97
TINY = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, max_position_embeddings=64)
CASES = {
    # grouped-query attention (4 query heads on 2 kv heads), an odd rope theta, untied LM head
    "llama-gqa-untied": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=2,
                         rope_theta=123.0, tie_word_embeddings=False, rms_norm_eps=1e-5)),
    # multi-head attention, tied embeddings (SmolLM's layout), biases everywhere
    "llama-mha-tied-bias": ("LlamaConfig", "LlamaForCausalLM", dict(num_attention_heads=4, num_key_value_heads=4,
                            rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True, mlp_bias=True)),
    # Qwen2: q/k/v biases only, one kv head
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_attention_heads=4, num_key_value_heads=1,
              rope_theta=1e6, bos_token_id=1, eos_token_id=2)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, sliding_window=64)),
}  # fmt: skip


def _hf_model(case: str, seed: int = 0):
    config_cls, model_cls, extra = CASES[case]
    torch.manual_seed(seed)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**TINY, **extra)).eval()
    with torch.no_grad():  # random init gives near-uniform logits; larger weights make the choices clear
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return hf


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request, tmp_path_factory):
    hf = _hf_model(request.param)
    ours = vlkit.from_pretrained(save_hf(hf, tmp_path_factory.mktemp(request.param)))
    return request.param, hf, ours


def test_config_and_logits_match(pair):
    case, hf, ours = pair
    assert isinstance(ours, Llama)
    c = ours.config
    assert c.num_kv_heads == hf.config.num_key_value_heads and c.tie_word_embeddings == (ours.lm_head is None)
    assert c.qkv_bias == (case != "llama-gqa-untied" and case != "mistral")
    ids = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(ids).logits
        assert max_diff(ours(ids), ref) <= LOGITS_TOL
        mask = torch.ones_like(ids)
        mask[0, :4] = 0  # left padding: transformers without position ids counts positions from 0 as well
        assert max_diff(ours(ids, attention_mask=mask)[0, 4:], hf(ids, attention_mask=mask).logits[0, 4:]) <= LOGITS_TOL


@pytest.mark.parametrize("num_beams", [1, 3])
def test_greedy_and_beam_continuations_match(pair, num_beams):
    _, hf, ours = pair
    # no pad id (0) in the prompts: transformers would take it for padding; pad 5, as HF's beam search
    # fills finished rows with eos when the pad id is 0
    ids = torch.randint(3, V, (3, 16), generator=torch.Generator().manual_seed(2))
    ref = hf.generate(ids, max_new_tokens=12, do_sample=False, num_beams=num_beams, pad_token_id=5)
    assert torch.equal(ours.generate(ids, max_new_tokens=12, num_beams=num_beams, pad_token_id=5), ref)


def test_left_padded_batch_equals_rows_and_transformers(pair):
    _, hf, ours = pair
    rows = [torch.tensor([5, 17, 33, 8, 60, 12]), torch.tensor([44, 9, 71]), torch.tensor([30, 3, 25, 90])]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T - len(r) :], mask[i, T - len(r) :] = r, 1
    batch = ours.generate(ids, max_new_tokens=8, attention_mask=mask, eos_token_id=None)
    for i, r in enumerate(rows):
        assert torch.equal(batch[i, T:], ours.generate(r[None], max_new_tokens=8, eos_token_id=None)[0, len(r) :])
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(batch, ref)


def test_decoder_protocol_inputs_embeds_and_cache():
    torch.manual_seed(0)
    model = vlkit.create_model("llama-tiny").eval()
    ids = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        full = model.hidden_states(ids)
        assert torch.allclose(model.hidden_states(inputs_embeds=model.embed_tokens(ids)), full, atol=1e-6)
        from vlkit.layers import KVCache

        cache = KVCache(model.config.num_layers)
        first = model.hidden_states(ids[:, :4], cache=cache)
        rest = model.hidden_states(ids[:, 4:], cache=cache)
        assert max_diff(torch.cat([first, rest], dim=1), full) <= 1e-5
        assert model.logits(full).shape == (2, 7, 1000)
    with pytest.raises(ValueError, match="exactly one"):
        model.hidden_states()


def test_save_hf_round_trip_loads_in_transformers(tmp_path):
    from vlkit.tokenizers import BPETokenizer

    corpus = ["a red circle on the left", "the blue square is at the top", "two green triangles"] * 5
    tok = BPETokenizer.train(corpus, 300, special_tokens={"bos": "<s>", "eos": "</s>"})
    for tie in (False, True):
        torch.manual_seed(0)
        model = vlkit.create_model(
            "llama-tiny", vocab_size=tok.vocab_size, tie_word_embeddings=tie, rope_theta=777.0, bos_token_id=0,
            eos_token_id=1,
        ).eval()  # fmt: skip
        out = export_hf(model, tmp_path / f"hf-{tie}", tokenizer=tok)
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
        assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.tie_word_embeddings == tie
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
        text = "the red triangle at the top"
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            assert max_diff(hf(ids).logits, model(ids)) <= LOGITS_TOL
        back = vlkit.from_pretrained(out)  # and HF's folder reads back into the same model
        assert back.config == model.config
        with torch.no_grad():
            assert max_diff(back(ids), model(ids)) <= 1e-6


def test_qwen2_exports_as_qwen2():
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=48, num_layers=1, num_heads=4, num_kv_heads=2,
                         qkv_bias=True)  # fmt: skip
    from vlkit.convert import hf_llama

    assert hf_llama.config_to_hf(config)["architectures"] == ["Qwen2ForCausalLM"]
    with pytest.raises(ValueError, match="output only"):
        hf_llama.config_to_hf(LlamaConfig(proj_bias=True))


@pytest.mark.parametrize(
    ("rope", "name"),
    [
        ({"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0}, "llama3"),
        ({"type": "linear", "factor": 2.0}, "linear"),
    ],
)
def test_unsupported_rope_scaling_is_refused_by_name(tmp_path, rope, name):
    hf = _hf_model("llama-gqa-untied")
    folder = save_hf(hf, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = rope
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=f"{name} rope scaling is not supported"):
        vlkit.from_pretrained(folder)


def test_presets_have_the_published_sizes():
    # parameter counts of the published checkpoints (tied weights once): SmolLM-135M, TinyLlama-1.1B
    for name, params in (("smollm-135m", 134_515_008), ("tinyllama-1.1b", 1_100_048_384)):
        with torch.device("meta"):  # sizes only, no memory
            model = Llama(vlkit.models.registry.PRESETS[name]())
        assert model.num_parameters() == params, name
