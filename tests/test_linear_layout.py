"""nn.Linear weights re-stored in (in, out) memory order (vlkit.layers.transpose_linear_storage):
same values, same tokens, and everything else (saving, loading, export, training, LoRA, the
compiled step) works on such a model."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from safetensors.torch import save_file

import vlkit
from vlkit.convert.hf_export import save_hf
from vlkit.layers import contiguous_linear_storage, transpose_linear_storage
from vlkit.layers.lora import apply_lora, merge_lora
from vlkit.losses.lm import lm_loss


def _model(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = vlkit.create_model(name, **overrides).eval()
    with torch.no_grad():  # off the init, so that the choices are clear
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _generate(name: str, model, **options) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 998, (2, 6), generator=g)
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    options = {"max_new_tokens": 8, "eos_token_id": None, **options}
    if name == "llama-tiny":
        return model.generate(ids, attention_mask=mask, **options)
    if name == "blip2-tiny":
        return model.generate(pixels, ids, attention_mask=mask, **options)
    image = torch.full((2, 1), model.config.image_token_id)  # vlm-tiny: the image token once per row
    return model.generate(pixels, torch.cat([image, ids], 1), attention_mask=torch.cat([mask[:, :1], mask], 1), **options)  # fmt: skip


def _linear_weights(model) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.parametrize("name", ["llama-tiny", "blip2-tiny", "vlm-tiny"])
def test_same_values_and_tokens_greedy_and_beam(name):
    model = _model(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = {mode: _generate(name, model, **opts) for mode, opts in {"greedy": {}, "beam": {"num_beams": 3}}.items()}
    params = [id(p) for p in model.parameters()]
    changed = transpose_linear_storage(model)
    assert changed == len(_linear_weights(model)) > 0
    assert transpose_linear_storage(model) == 0  # idempotent
    assert [id(p) for p in model.parameters()] == params  # the same Parameters (an optimizer keeps them)
    for w in _linear_weights(model):
        assert w.stride() == (1, w.shape[0])
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    for mode, opts in {"greedy": {}, "beam": {"num_beams": 3}}.items():
        assert torch.equal(_generate(name, model, **opts), tokens[mode]), mode
    assert torch.equal(_generate(name, model, static_cache=True), tokens["greedy"])
    assert contiguous_linear_storage(model) == changed
    assert all(w.is_contiguous() for w in _linear_weights(model))


def test_save_load_and_hf_export_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    from vlkit.tokenizers import BPETokenizer

    tok = BPETokenizer.train(["a red circle on the left", "two green squares"] * 5, 280, special_tokens={"bos": "<s>"})
    model = _model("llama-tiny", vocab_size=tok.vocab_size, bos_token_id=0, eos_token_id=0)
    reference = copy.deepcopy(model)
    transpose_linear_storage(model)
    ids = torch.randint(1, tok.vocab_size, (2, 7), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(ids)
    loaded = vlkit.from_pretrained(model.save_pretrained(tmp_path / "vlkit"))
    assert all(w.is_contiguous() for w in _linear_weights(loaded))  # saved and read as usual
    with torch.no_grad():
        assert torch.equal(loaded(ids), reference(ids))
        assert torch.allclose(logits, reference(ids), atol=1e-5)
        hf = transformers.LlamaForCausalLM.from_pretrained(str(save_hf(model, tmp_path / "hf", tokenizer=tok))).eval()
        assert torch.allclose(hf(ids).logits, reference(ids), atol=1e-4)
    with pytest.raises(ValueError, match="contiguous"):  # safetensors' own writer refuses the new order
        save_file(model.state_dict(), str(tmp_path / "raw.safetensors"))
    reference.load_state_dict(model.state_dict())  # and load_state_dict copies from it
    contiguous_linear_storage(model)
    save_file(model.state_dict(), str(tmp_path / "raw.safetensors"))


def test_training_after_transposing_gives_the_same_loss_and_gradients():
    model = _model("llama-tiny").train()
    other = copy.deepcopy(model)
    transpose_linear_storage(other)
    ids = torch.randint(5, 998, (3, 9), generator=torch.Generator().manual_seed(5))
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (model, other)]
    for _ in range(2):
        losses = []
        for m, opt in zip((model, other), opts, strict=True):
            opt.zero_grad(set_to_none=True)
            loss = lm_loss(m(ids), ids, label_smoothing=0.0)
            loss.backward()
            losses.append(loss.detach())
        assert torch.allclose(losses[0], losses[1], atol=1e-6)
        for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), name
            assert q.grad.stride() == q.stride()  # gradients follow the weights' order
        for opt in opts:
            opt.step()
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_lora_merge_and_compiled_step(monkeypatch):
    model = _model("llama-tiny")
    transpose_linear_storage(model)
    apply_lora(model, target_modules=["attn.qkv", "mlp.fc1"], rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, 0.1)
    ids = torch.randint(5, 998, (2, 7), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        adapted = model(ids)
        merge_lora(model)
        assert torch.allclose(model(ids), adapted, atol=1e-5)
    eager = _generate("llama-tiny", model)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # dynamo, no C++
    torch._dynamo.reset()
    try:
        assert torch.equal(_generate("llama-tiny", model, compile=True), eager)
    finally:
        torch._dynamo.reset()


def test_ddp_on_a_transposed_model(tmp_path):
    """DDP (gloo, one process) wraps a transposed model and gives the gradients of the bare one."""
    import torch.distributed as dist

    model = _model("llama-tiny").train()
    transpose_linear_storage(model)
    bare = copy.deepcopy(model)
    ids = torch.randint(5, 998, (2, 7), generator=torch.Generator().manual_seed(7))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        for m in (wrapped, bare):
            lm_loss(m(ids), ids, label_smoothing=0.0).backward()
    finally:
        dist.destroy_process_group()
    for (name, p), q in zip(model.named_parameters(), bare.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
