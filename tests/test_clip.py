"""CLIP model: presets, temperature, pooling, save/load, and that model + loss learn."""

import math

import pytest
import torch
import transformers

import vlkit
from vlkit.losses.contrastive import clip_loss
from vlkit.models import CLIP, CLIPConfig


def _ids(B=3, T=12, eot=49407, lengths=(12, 7, 2), seed=0):
    ids = torch.randint(1, 49406, (B, T), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate(lengths):
        ids[row, length - 1], ids[row, length:] = eot, 0
    return ids


@pytest.mark.parametrize(
    "preset, hf_sizes",
    [
        ("clip-vit-b-32", dict(vision_config={}, text_config={})),
        ("clip-vit-b-16", dict(vision_config=dict(patch_size=16), text_config={})),
        (
            "clip-vit-l-14",
            dict(
                vision_config=dict(
                    hidden_size=1024,
                    intermediate_size=4096,
                    num_hidden_layers=24,
                    num_attention_heads=16,
                    patch_size=14,
                ),
                text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
                projection_dim=768,
            ),
        ),
    ],
)
def test_presets_have_the_reference_sizes(preset, hf_sizes):
    """Parameter counts equal HF's CLIPModel of the same OpenAI size (built on the meta device)."""
    with torch.device("meta"):
        model = vlkit.create_model(preset)
        ref = transformers.CLIPModel(transformers.CLIPConfig(**hf_sizes))
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())
    assert model.config.vision.act == model.config.text.act == "quick_gelu"
    assert model.config.vision.resize_mode == "shortest" and model.config.vision.interpolation == "bicubic"


def test_tiny_preset_and_nested_overrides():
    model = vlkit.create_model("clip-tiny", vision={"image_size": 64}, text={"depth": 1}, embed_dim=32)
    assert isinstance(model, CLIP) and isinstance(model.config, CLIPConfig)
    assert model.config.vision.patch_size == 8 and model.config.vision.num_patches == 64
    assert len(model.text.encoder) == 1
    image, text = model(torch.randn(2, 3, 64, 64), _ids(2, lengths=(12, 5)))
    assert image.shape == text.shape == (2, 32)
    assert torch.allclose(image.norm(dim=-1), torch.ones(2)) and torch.allclose(text.norm(dim=-1), torch.ones(2))


def test_temperature_initialisation_and_clamp():
    model = vlkit.create_model("clip-tiny")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500.0))
    scale = model.scale()
    assert scale.item() == 100.0
    scale.backward()
    assert model.logit_scale.grad.item() == 0.0  # clamped: no push past 100


def test_text_pooled_at_end_of_text_and_causal():
    model = vlkit.create_model("clip-tiny").eval()
    ids = _ids()
    with torch.no_grad():
        base = model.encode_text(ids)
        changed = ids.clone()
        changed[1, 8:] = 123  # tokens after row 1's end-of-text (position 6)
        after = model.encode_text(changed)
        assert torch.allclose(after[1], base[1], atol=1e-6)
        changed[1, 3] = 124  # a token before it does change the feature
        assert not torch.allclose(model.encode_text(changed)[1], base[1], atol=1e-4)
        hidden = model.text.encode(ids)
        assert torch.allclose(model.text_proj(hidden[torch.arange(3), torch.tensor([11, 6, 1])]), base, atol=1e-6)


def test_first_eos_pooling_when_eos_token_id_set():
    model = vlkit.create_model("clip-tiny", text={"eos_token_id": 5}).eval()
    ids = torch.tensor([[9, 5, 8, 5, 0], [7, 7, 7, 5, 0]])
    assert model.text.pool_index(ids).tolist() == [1, 3]


def test_save_and_load_round_trip(tmp_path):
    model = vlkit.create_model("clip-tiny", vision={"image_size": 16}, embed_dim=16).eval()
    loaded = vlkit.from_pretrained(model.save_pretrained(tmp_path))
    assert loaded.config == model.config
    pixels, ids = torch.randn(2, 3, 16, 16), _ids(2, lengths=(12, 4))
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
        assert torch.equal(loaded.encode_text(ids), model.encode_text(ids))


def test_input_errors():
    model = vlkit.create_model("clip-tiny")
    with pytest.raises(ValueError, match="78 positions is longer than the 77"):
        model.encode_text(torch.zeros(1, 78, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids"):
        model.encode_text(torch.zeros(78, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model.encode_image(torch.zeros(1, 3, 30, 30))
    with pytest.raises(TypeError, match="ViTConfig"):
        CLIPConfig(vision={"image_size": 32})


@pytest.mark.parametrize("seed", [0, 1])
def test_model_and_loss_learn_to_match_pairs(seed):
    """8 random images with 8 captions: 15 AdamW steps (gradients clipped, as the training loop
    does) take the loss from ~log 8 close to 0; two seeds."""
    torch.manual_seed(seed)
    model = vlkit.create_model("clip-tiny", text={"vocab_size": 64, "context_length": 8})
    pixels = torch.randn(8, 3, 32, 32)
    ids = torch.randint(1, 62, (8, 8))
    ids[:, -1] = 63  # end-of-text
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = clip_loss(*model(pixels, ids), model.scale())["contrastive_loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.5 and losses[-1] < 0.1 * losses[0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.similarity(pixels, ids).argmax(dim=1), torch.arange(8))
