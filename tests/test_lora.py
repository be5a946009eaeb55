"""LoRA: only adapters train, merged weights give the adapter model's logits, adapters save and load."""

from __future__ import annotations

import pytest
import torch

from helpers import max_diff
from vlkit.layers.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_adapter,
    lora_state_dict,
    merge_lora,
    save_adapter,
)
from vlkit.models.clip import clip_vision_config
from vlkit.models.registry import PRESETS, replace_config
from vlkit.models.vlm import VLM, VLMConfig

TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1"]


def _vlm(seed: int = 0) -> VLM:
    torch.manual_seed(seed)
    config = VLMConfig(
        vision=clip_vision_config(image_size=16, patch_size=8, width=32, depth=2, num_heads=4, mlp_dim=64),
        text=replace_config(PRESETS["llama-tiny"](), vocab_size=64),
        image_token_id=63,
    )
    return VLM(config).eval()


def _inputs():
    torch.manual_seed(1)
    return torch.randn(1, 3, 16, 16), torch.tensor([[1, 63, 5, 6, 7, 8]])


def _adapted(seed: int = 0) -> tuple[VLM, list[str]]:
    model = _vlm(seed)
    names = apply_lora(model.llm, target_modules=TARGETS, rank=4, alpha=8)
    with torch.no_grad():  # B starts at zero: give the adapters something to say
        for n, p in model.named_parameters():
            if n.endswith("lora_b"):
                p.normal_(std=0.2)
    return model, names


def test_only_adapters_require_grad():
    model, names = _adapted()
    assert len(names) == 2 * 3 and all(".blocks." in n for n in names)
    trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert all(p.requires_grad for p in model.projector.parameters())  # outside the adapted module: untouched
    pixels, ids = _inputs()
    model(pixels, ids).sum().backward()
    assert all(p.grad is None for n, p in model.llm.named_parameters() if not n.endswith(("lora_a", "lora_b")))


def test_fresh_adapters_change_nothing():
    model = _vlm()
    pixels, ids = _inputs()
    with torch.no_grad():
        before = model(pixels, ids)
        apply_lora(model.llm, target_modules=TARGETS, rank=4, alpha=8)
        assert torch.equal(model(pixels, ids), before)


def test_merge_gives_adapter_logits():
    model, _ = _adapted()
    pixels, ids = _inputs()
    with torch.no_grad():
        adapted = model(pixels, ids)
        assert max_diff(adapted, _vlm()(pixels, ids)) > 1e-2  # the adapters do change the output
        merge_lora(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        assert max_diff(model(pixels, ids), adapted) <= 1e-5


def test_save_load_round_trip(tmp_path):
    model, _ = _adapted()
    pixels, ids = _inputs()
    extra = {f"projector.{k}": v for k, v in model.projector.state_dict().items()}
    save_adapter(model, tmp_path / "adapter", LoRAConfig(rank=4, alpha=8, target_modules=tuple(TARGETS)), extra)
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    assert all(k.endswith(("lora_a", "lora_b")) for k in lora_state_dict(model))
    with torch.no_grad():
        expected = model(pixels, ids)
        loaded = load_adapter(_vlm(), tmp_path / "adapter")
        assert torch.equal(loaded(pixels, ids), expected)
        merged = load_adapter(_vlm(), tmp_path / "adapter", merge=True)
        assert max_diff(merged(pixels, ids), expected) <= 1e-5


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="match no linear layer"):
        apply_lora(_vlm().llm, target_modules=["nope"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="rank"):
        apply_lora(_vlm().llm, target_modules=TARGETS, rank=0, alpha=2)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(_vlm(), tmp_path)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_adapter(_vlm(), tmp_path, LoRAConfig())
