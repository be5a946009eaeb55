"""SigLIP: parity with transformers' SiglipModel (random weights), the round trip through save_hf,
the presets' exact parameter counts, the paper's initial scale and bias, and the tokenizer refusal."""

import math

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.convert.hf_siglip import config_to_hf
from vlkit.losses.sigmoid import sigmoid_loss
from vlkit.models import Siglip

transformers = pytest.importorskip("transformers")

TOL = 1e-5
VOCAB, T = 99, 16
TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _hf_siglip(image_size: int = 16, patch_size: int = 8):
    torch.manual_seed(0)
    config = transformers.SiglipConfig(
        text_config=dict(TOWER, vocab_size=VOCAB, max_position_embeddings=T, bos_token_id=None, eos_token_id=None),
        vision_config=dict(TOWER, image_size=image_size, patch_size=patch_size),
    )
    model = transformers.SiglipModel(config).eval()
    with torch.no_grad():  # HF starts biases, scale and bias at 0: make every parameter matter
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _batch(B: int = 3, image_size: int = 16):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 10:] = 0  # right padding in one row
    return torch.randn(B, 3, image_size, image_size, generator=g), ids, mask


@pytest.mark.parametrize("image_size,patch_size", [(16, 8), (18, 8)])  # 18: "valid" patches, as so400m/14 at 384
def test_hf_siglip_parity(tmp_path, image_size, patch_size):
    ref = _hf_siglip(image_size, patch_size)
    model = vlkit.from_pretrained(save_hf(ref, tmp_path))
    assert isinstance(model, Siglip) and model.config.vision.num_patches == 4
    pixels, ids, mask = _batch(image_size=image_size)
    with torch.no_grad():
        out = ref(input_ids=ids, pixel_values=pixels, return_loss=True)
        assert max_diff(model.encode_image(pixels), ref.get_image_features(pixel_values=pixels).pooler_output) <= TOL
        assert max_diff(model.encode_text(ids), ref.get_text_features(input_ids=ids).pooler_output) <= TOL
        hf_masked = ref.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        assert max_diff(model.encode_text(ids, mask), hf_masked) <= TOL
        assert max_diff(model.similarity(pixels, ids), out.logits_per_image) <= TOL
        img, txt = model(pixels, ids)
        loss = sigmoid_loss(img, txt, model.scale(), model.bias())["sigmoid_loss"]
    assert loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert model.logit_bias.item() == pytest.approx(ref.logit_bias.item())


def test_round_trip_through_save_hf(tmp_path):
    """vlkit -> HF folder (SiglipModel loads it: the same features; the tokenizer as tokenizer.json)
    -> vlkit again: the same config and weights."""
    from vlkit.data.synthetic import shapes_tokenizer

    tok = shapes_tokenizer()
    torch.manual_seed(0)
    model = vlkit.create_model("siglip-tiny", text={"vocab_size": tok.vocab_size, "context_length": T}).eval()
    out = export_hf(model, tmp_path / "hf", tokenizer=tok)
    ref = transformers.SiglipModel.from_pretrained(str(out)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    ids = tok(["a red circle", "a blue square"], padding="max_length", context_length=T)["input_ids"]
    with torch.no_grad():
        assert max_diff(model.encode_image(pixels), ref.get_image_features(pixel_values=pixels).pooler_output) <= TOL
        assert max_diff(model.encode_text(ids), ref.get_text_features(input_ids=ids).pooler_output) <= TOL
    assert ref.logit_scale.item() == pytest.approx(math.log(10)) and ref.logit_bias.item() == -10.0
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert hf_tok("a red circle")["input_ids"] == tok.encode("a red circle", add_special_tokens=True)
    back = vlkit.from_pretrained(out)
    assert back.config.vision == model.config.vision and back.config.text == model.config.text
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert back.tokenizer.encode("a red circle") == tok.encode("a red circle")


@pytest.mark.parametrize(
    "name", ["siglip-base-patch16-224", "siglip-base-patch16-256", "siglip-so400m-patch14-384", "siglip-tiny"]
)
def test_preset_parameter_count_equals_transformers(name):
    with torch.device("meta"):
        model = vlkit.create_model(name)
        hf = config_to_hf(model.config)
        ref = transformers.SiglipModel(
            transformers.SiglipConfig(text_config=hf["text_config"], vision_config=hf["vision_config"])
        )
    assert model.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_published_sizes():
    """The counts transformers gives the published checkpoints' configs (checked by building them
    on the meta device): base/16 203,155,970 at 224 px; so400m/14 877,960,498."""
    with torch.device("meta"):
        assert vlkit.create_model("siglip-base-patch16-224").num_parameters() == 203_155_970
        assert vlkit.create_model("siglip-so400m-patch14-384").num_parameters() == 877_960_498


def test_from_scratch_scale_and_bias_are_the_papers():
    model = vlkit.create_model("siglip-tiny")
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.scale().item() == pytest.approx(10)
    assert model.bias().item() == -10.0
    capped = vlkit.create_model("siglip-tiny", max_logit_scale=5.0)
    assert capped.scale().item() == pytest.approx(5.0)


def test_other_image_sizes_resize_the_positions():
    model = vlkit.create_model("siglip-tiny").eval()
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 48, 48)).shape == (2, 64)


def test_sentencepiece_tokenizer_is_refused_with_the_reason(tmp_path):
    (tmp_path / "spiece.model").write_bytes(b"\x0a\x00")
    with pytest.raises(ValueError, match="SentencePiece"):
        vlkit.get_tokenizer(tmp_path)


def test_text_features_do_not_depend_on_how_the_batch_was_padded():
    """The last position is pooled, so every text is read at the full context length (padded with
    pad_token_id): padding to the batch's longest, to the context, or a text alone give one feature."""
    tok = vlkit.get_tokenizer("clip")
    model = vlkit.create_model("siglip-tiny").eval()
    texts = ["a red circle", "a small blue square at the top left"]
    longest, full = tok(texts, padding="longest"), tok(texts, padding="max_length")  # 77, the model's length
    alone = tok(texts[:1], padding="longest")
    with torch.no_grad():
        want = model.encode_text(full["input_ids"], full["attention_mask"])
        assert max_diff(model.encode_text(longest["input_ids"], longest["attention_mask"]), want) <= TOL
        assert max_diff(model.encode_text(alone["input_ids"], alone["attention_mask"]), want[:1]) <= TOL
        assert max_diff(model.encode_text(longest["input_ids"]), model.encode_text(full["input_ids"])) <= TOL
