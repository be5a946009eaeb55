"""CLIP parity with HF transformers' CLIPModel and open_clip's CLIP on random tiny models, float32:
max abs diff <= 1e-5 for image and text features; and conversion back to an HF folder."""

import json

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.cli import main as cli_main
from vlkit.models import CLIP

transformers = pytest.importorskip("transformers")
TOL = 1e-5
VOCAB = 99


def _hf_clip(eos_token_id: int, act: str = "quick_gelu"):
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            eos_token_id=eos_token_id,
            bos_token_id=VOCAB - 2,
            pad_token_id=0,
            hidden_act=act,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            hidden_act=act,
        ),
        projection_dim=24,
    )
    return transformers.CLIPModel(cfg).eval()


def _text_batch(eot: int, T: int = 16):
    """Rows of random tokens ending in ``eot``, right-padded with 0, of lengths 16, 9 and 3."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB - 2, (3, T), generator=g)
    mask = torch.ones(3, T, dtype=torch.long)
    for row, length in enumerate((T, 9, 3)):
        ids[row, length - 1] = eot
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


def _images(n=3, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("eos, act", [(VOCAB - 1, "quick_gelu"), (2, "gelu")])
def test_hf_clip_parity(tmp_path, eos, act):
    """eos_token_id=98: pool at the first 98; eos_token_id=2: HF's legacy 'pool at the largest id'."""
    ref = _hf_clip(eos, act)
    model = vlkit.from_pretrained(save_hf(ref, tmp_path))
    assert isinstance(model, CLIP)
    assert model.config.text.eos_token_id == (None if eos == 2 else eos)
    ids, mask = _text_batch(VOCAB - 1)
    if eos == VOCAB - 1:
        ids[0, 5] = VOCAB - 1  # a second end-of-text later in a row: the first one is pooled
    pixels = _images()
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        image = model.encode_image(pixels)
        text = model.encode_text(ids, mask)
        assert max_diff(image, ref.get_image_features(pixel_values=pixels).pooler_output) <= TOL
        assert max_diff(text, ref.get_text_features(input_ids=ids, attention_mask=mask).pooler_output) <= TOL
        assert max_diff(model.encode_text(ids), text) <= TOL  # right padding never reaches end-of-text
        img_n, txt_n = model(pixels, ids, mask)
        assert max_diff(img_n, out.image_embeds) <= TOL and max_diff(txt_n, out.text_embeds) <= TOL
        assert max_diff(model.similarity(pixels, ids, mask), out.logits_per_image) <= 1e-4
    assert model.logit_scale.item() == pytest.approx(ref.logit_scale.item())


def _word_tokenizer(n: int = VOCAB):
    """A word tokenizer of exactly ``n`` tokens, [EOS] the largest id (CLIP's argmax pooling)."""
    from vlkit.tokenizers import WordTokenizer

    words = [f"w{i}" for i in range(n - 4)]
    return WordTokenizer(
        ["[PAD]", "[UNK]", "[BOS]", *words, "[EOS]"], prefix=["[BOS]"], suffix=["[EOS]"], context_length=16
    )


def test_convert_to_hf_round_trip(tmp_path, capsys):
    """`vlkit convert MODEL --to hf OUT` writes a folder CLIPModel loads with identical outputs, the
    tokenizer included; a model without a tokenizer is refused with the reason, nothing written."""
    torch.manual_seed(0)
    model = vlkit.create_model(
        "clip-tiny", text={"vocab_size": VOCAB, "context_length": 16}, vision={"act": "gelu"}, embed_dim=24
    ).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    src = model.save_pretrained(tmp_path / "vlkit")
    assert cli_main(["convert", str(src), "--to", "hf", str(tmp_path / "hf")]) == 2
    assert "no tokenizer" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    model.save_pretrained(src, tokenizer=_word_tokenizer())
    assert cli_main(["convert", str(src), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["crop_size"]["height"] == 32
    ref = transformers.CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids, mask = _text_batch(VOCAB - 1)
    pixels = _images()
    with torch.no_grad():
        assert max_diff(model.encode_image(pixels), ref.get_image_features(pixel_values=pixels).pooler_output) <= TOL
        hf_text = ref.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        assert max_diff(model.encode_text(ids, mask), hf_text) <= TOL
    assert ref.logit_scale.item() == pytest.approx(3.0)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert hf_tok("w1 w2 w90")["input_ids"] == _word_tokenizer().encode("w1 w2 w90", add_special_tokens=True)
    # and back: HF folder -> vlkit folder -> the same model, and the same tokenizer
    assert cli_main(["convert", str(tmp_path / "hf"), "--to", "vlkit", str(tmp_path / "back")]) == 0
    back = vlkit.from_pretrained(tmp_path / "back")
    assert back.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert vlkit.get_tokenizer(tmp_path / "back").encode("w3 w4") == _word_tokenizer().encode("w3 w4")


def test_convert_refuses_families_without_hf_writer(tmp_path, capsys):
    vlkit.create_model("albef-tiny").save_pretrained(tmp_path / "albef")
    assert cli_main(["convert", str(tmp_path / "albef"), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "albef" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- open_clip

open_clip = pytest.importorskip("open_clip")


def _open_clip_cfg(quick_gelu: bool) -> dict:
    return dict(
        embed_dim=24,
        quick_gelu=quick_gelu,
        vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=2, head_width=12, mlp_ratio=2.0),
        text_cfg=dict(context_length=16, vocab_size=VOCAB, width=32, heads=4, layers=2),
    )


@pytest.mark.parametrize("quick_gelu, weights, arch", [(True, "safetensors", "CLIP"), (False, "bin", "CustomTextCLIP")])
def test_open_clip_parity(tmp_path, quick_gelu, weights, arch):
    """Both open_clip key layouts: text tower at the top level (CLIP) or under "text." (CustomTextCLIP)."""
    torch.manual_seed(0)
    cfg = _open_clip_cfg(quick_gelu)
    ref = getattr(open_clip.model, arch)(**cfg).eval()
    if arch == "CustomTextCLIP":
        assert any(k.startswith("text.transformer.") for k in ref.state_dict())
        cfg = dict(cfg, custom_text=True)
    with torch.no_grad():  # open_clip zero-initialises some biases; make every weight count
        for p in ref.parameters():
            p.add_(0.02 * torch.randn_like(p))
    preprocess = {
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}))
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(
            {k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors")
        )
    else:
        torch.save(ref.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    model = vlkit.from_pretrained(tmp_path)
    assert isinstance(model, CLIP)
    assert model.config.vision.act == ("quick_gelu" if quick_gelu else "gelu")
    assert model.config.vision.image_mean == (0.5, 0.4, 0.3)
    ids, _ = _text_batch(VOCAB - 1)
    pixels = _images()
    with torch.no_grad():
        assert max_diff(model.encode_image(pixels), ref.encode_image(pixels)) <= TOL
        assert max_diff(model.encode_text(ids), ref.encode_text(ids)) <= TOL
        img, txt = model(pixels, ids)
        ref_img, ref_txt, ref_scale = ref(pixels, ids)
        assert max_diff(img, ref_img) <= TOL and max_diff(txt, ref_txt) <= TOL
        assert model.scale().item() == pytest.approx(ref_scale.item())
    if weights == "safetensors":  # open_clip -> HF transformers through `vlkit convert`
        tok = _word_tokenizer().save(tmp_path / "tok")  # open_clip's folder names no tokenizer of 99 tokens
        argv = ["convert", str(tmp_path), "--to", "hf", str(tmp_path / "hf"), "--tokenizer", str(tok)]
        assert cli_main(argv) == 0
        hf = transformers.CLIPModel.from_pretrained(str(tmp_path / "hf")).eval()
        with torch.no_grad():
            assert max_diff(hf.get_image_features(pixel_values=pixels).pooler_output, ref.encode_image(pixels)) <= TOL
            assert max_diff(hf.get_text_features(input_ids=ids).pooler_output, ref.encode_text(ids)) <= TOL


def test_open_clip_unsupported_options_are_named(tmp_path):
    cfg = _open_clip_cfg(True)
    cfg["vision_cfg"]["ls_init_value"] = 1e-5
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save({}, tmp_path / "open_clip_pytorch_model.bin")
    with pytest.raises(ValueError, match="ls_init_value"):
        vlkit.from_pretrained(tmp_path)


def test_open_clip_pipeline_on_real_photos_and_captions(tmp_path):
    """Real photos through vlkit.image_transform and real captions through vlkit's CLIP tokenizer give
    the features open_clip computes from its own preprocessing and tokenizer (49408-token vocabulary)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    torch.manual_seed(0)
    cfg = dict(_open_clip_cfg(True), text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=4, layers=2))
    cfg["vision_cfg"]["image_size"] = 64
    ref = open_clip.model.CLIP(**cfg).eval()
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.save(ref.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    model = vlkit.from_pretrained(tmp_path)

    photos = [Image.fromarray(getattr(skimage_data, name)()) for name in ("astronaut", "chelsea", "coffee")]
    captions = ["a photo of an astronaut", "a cat lying on a blanket", "a cup of coffee on a saucer"]
    tokens = vlkit.get_tokenizer("clip")(captions)
    assert torch.equal(tokens["input_ids"], open_clip.tokenize(captions))
    ours_pre = vlkit.image_transform(model)
    ref_pre = open_clip.image_transform(64, is_train=False)
    with torch.no_grad():
        pixels = torch.stack([ours_pre(p) for p in photos])
        assert max_diff(pixels, torch.stack([ref_pre(p) for p in photos])) <= 1e-6
        assert max_diff(model.encode_image(pixels), ref.encode_image(pixels)) <= TOL
        assert (
            max_diff(
                model.encode_text(tokens["input_ids"], tokens["attention_mask"]), ref.encode_text(tokens["input_ids"])
            )
            <= TOL
        )
