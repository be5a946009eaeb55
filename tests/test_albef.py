"""ALBEF mechanics: structure, shapes, masks, the EMA update, the feature queues, save/load."""

import pytest
import torch

import vlkit
from vlkit.models.albef import ALBEF, ALBEFConfig, ALBEFTextConfig, albef_base, albef_vision_config
from vlkit.models.registry import replace_config


def tiny(**overrides) -> ALBEF:
    torch.manual_seed(0)
    config = replace_config(vlkit.models.registry.PRESETS["albef-tiny"](), text={"vocab_size": 50}, **overrides)
    return ALBEF(config).eval()


def batch(B=3, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, 3, 32, 32, generator=g)
    ids = torch.randint(5, 50, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    return pixels, ids, mask


def test_presets_and_structure():
    assert {"albef-base", "albef-tiny"} <= set(vlkit.list_models())
    c = albef_base()
    assert (c.vision.image_size, c.vision.patch_size, c.vision.width, c.vision.depth) == (256, 16, 768, 12)
    assert (c.text.text_layers, c.text.fusion_layers, c.text.hidden_size, c.embed_dim) == (6, 6, 768, 256)
    with torch.device("meta"):  # the full size, without allocating it
        model = ALBEF(c)
    blocks = model.encoders.text_encoder.blocks
    assert len(blocks) == 12
    assert [b.cross_attn is not None for b in blocks] == [False] * 6 + [True] * 6
    assert not blocks[0].norm_first  # BERT's post-norm
    assert blocks[6].cross_attn.kv.in_features == 768  # keys/values from the ViT width
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    momentum = sum(p.numel() for p in model.momentum_encoders.parameters())
    assert momentum == sum(p.numel() for p in model.encoders.parameters())
    # ViT-B/16 at 256 px (85.8M) + BERT-base with cross-attention in 6 layers, projections and heads (124.1M)
    assert 209e6 < trainable < 211e6
    assert model.image_queue.shape == (65536, 256)


def test_forward_shapes_and_normalised_features():
    model = tiny()
    pixels, ids, mask = batch()
    out = model(pixels, ids, mask, mlm_input_ids=ids)
    assert out["image_embeds"].shape == (3, 1 + 16, 32)
    assert out["text_hidden"].shape == (3, 6, 32)
    assert out["image_features"].shape == out["text_features"].shape == (3, 32)
    assert torch.allclose(out["image_features"].norm(dim=-1), torch.ones(3))
    assert out["mlm_logits"].shape == (3, 6, 50)
    itm = model.itm_logits(pixels, ids, mask)  # (B, 2), the signature BLIP's has
    fused = model.encoders.fuse(out["text_hidden"], mask, out["image_embeds"])
    assert itm.shape == (3, 2) and torch.allclose(itm, model.match_logits(fused), atol=1e-6)
    with pytest.raises(ValueError, match="scores pairs"):
        model.itm_logits(pixels, ids[:2], mask[:2])
    assert torch.allclose(model.encode_image(pixels, normalize=True), out["image_features"], atol=1e-6)
    assert torch.allclose(model.encode_text(ids, mask, normalize=True), out["text_features"], atol=1e-6)
    assert model.match(pixels, ids, mask).shape == (3,)
    m = model.momentum_features(pixels, ids, mask, ids)
    # the momentum copy starts equal to the online model
    assert torch.allclose(m["image_features"], out["image_features"], atol=1e-6)
    assert torch.allclose(m["mlm_logits"], out["mlm_logits"], atol=1e-5)
    assert not m["image_features"].requires_grad


def test_padding_is_invisible():
    model = tiny()
    pixels, ids, mask = batch(T=5)
    padded = torch.cat([ids, torch.zeros(3, 3, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 3, dtype=torch.long)], 1)
    e = model.encoders
    image = e.image_embeds(pixels)
    a = e.fuse(e.text_embeds(ids, mask), mask, image)
    b = e.fuse(e.text_embeds(padded, padded_mask), padded_mask, image)
    assert torch.allclose(a, b[:, :5], atol=1e-5)
    assert torch.allclose(model.encode_text(ids, mask), model.encode_text(padded, padded_mask), atol=1e-5)
    # without the mask the padding would be attended to
    assert not torch.allclose(model.encode_text(ids, mask), model.encode_text(padded), atol=1e-3)


def test_image_mask_hides_image_tokens():
    model = tiny()
    pixels, ids, mask = batch()
    e = model.encoders
    image = e.image_embeds(pixels)  # (B, 17, C)
    text = e.text_embeds(ids, mask)
    keep = torch.ones(3, 17, dtype=torch.long)
    keep[:, 9:] = 0
    masked = e.fuse(text, mask, image, keep)
    cut = e.fuse(text, mask, image[:, :9])
    assert torch.allclose(masked, cut, atol=1e-5)
    assert not torch.allclose(masked, e.fuse(text, mask, image), atol=1e-3)


def test_momentum_update_is_an_ema():
    model = tiny(momentum=0.9)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.momentum_encoders.parameters()]
    online = [p.clone() for p in model.encoders.parameters()]
    model.momentum_update()
    for old, new, p in zip(before, model.momentum_encoders.parameters(), online):
        assert torch.allclose(new, 0.9 * old + 0.1 * p, atol=1e-6)
    model.momentum_update(momentum=0.0)  # m = 0 copies the online weights
    for new, p in zip(model.momentum_encoders.parameters(), online):
        assert torch.equal(new, p)
    assert not any(p.requires_grad for p in model.momentum_encoders.parameters())
    assert all(p.requires_grad for p in model.encoders.parameters())


def test_queue_enqueue_wraps_around():
    model = tiny(queue_size=5, embed_dim=32)
    D = 32

    def feats(start, n):
        v = torch.arange(start, start + n, dtype=torch.float)[:, None].expand(n, D).clone()
        return v, -v, torch.arange(start, start + n)

    model.enqueue(*feats(0, 3))
    assert int(model.queue_ptr) == 3
    assert model.image_queue[:3, 0].tolist() == [0, 1, 2]
    model.enqueue(*feats(3, 3))  # slots 3, 4, then wraps to 0
    assert int(model.queue_ptr) == 1
    assert model.image_queue[:, 0].tolist() == [5, 1, 2, 3, 4]
    assert model.text_queue[:, 0].tolist() == [-5, -1, -2, -3, -4]
    assert model.id_queue.tolist() == [5, 1, 2, 3, 4]
    model.enqueue(*feats(10, 7))  # more than the queue holds: the newest 5 remain, as if written one by one
    assert int(model.queue_ptr) == (1 + 7) % 5
    ref = torch.tensor([5.0, 1, 2, 3, 4])
    for i, v in enumerate(range(10, 17)):
        ref[(1 + i) % 5] = v
    assert model.image_queue[:, 0].tolist() == ref.tolist()
    model.enqueue(*feats(20, 1)[:2])  # without ids: -100
    assert model.id_queue[3].item() == -100
    with pytest.raises(ValueError, match="as many"):
        model.enqueue(torch.zeros(2, D), torch.zeros(3, D))


def test_initial_queues_are_unit_vectors_and_ids_match_nothing():
    model = tiny()
    assert torch.allclose(model.image_queue.norm(dim=1), torch.ones(model.config.queue_size))
    assert (model.id_queue == -100).all()


def test_save_and_load_round_trip(tmp_path):
    model = tiny(queue_size=4)
    pixels, ids, mask = batch()
    model.enqueue(torch.randn(2, 32), torch.randn(2, 32), torch.tensor([1, 2]))
    model.save_pretrained(tmp_path)
    loaded = vlkit.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ALBEF) and loaded.config == model.config
    a, b = model(pixels, ids, mask), loaded(pixels, ids, mask)
    assert torch.equal(a["image_features"], b["image_features"]) and torch.equal(a["text_features"], b["text_features"])
    assert torch.equal(loaded.image_queue, model.image_queue) and int(loaded.queue_ptr) == 2
    assert torch.equal(loaded.id_queue, model.id_queue)


def test_without_momentum():
    model = tiny(momentum=0.0, queue_size=0)
    assert model.momentum_encoders is None
    with pytest.raises(ValueError, match="no momentum"):
        model.momentum_features(*batch())
    model.enqueue(torch.zeros(2, 32), torch.zeros(2, 32))  # no queue: nothing to do


def test_config_errors():
    with pytest.raises(ValueError, match="queue_size > 0 needs momentum"):
        ALBEFConfig(momentum=0.0)
    with pytest.raises(ValueError, match="at least one text and one fusion"):
        ALBEFTextConfig(fusion_layers=0)
    with pytest.raises(TypeError, match="ALBEFConfig takes"):
        ALBEFConfig(text=albef_vision_config())
    with pytest.raises(ValueError, match="no MLM head"):
        m = tiny(mlm_head=False)
        m.encoders.mlm_logits(torch.zeros(1, 2, 32))
