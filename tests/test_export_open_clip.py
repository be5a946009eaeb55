"""`vlkit convert --to open_clip`: open_clip.create_model_and_transforms("local-dir:OUT") loads a vlkit
CLIP, and its preprocessing, tokenizer and features are vlkit's (float32, <= 1e-5)."""

import pytest
import torch

import vlkit
from helpers import max_diff
from vlkit.cli import main as cli_main

open_clip = pytest.importorskip("open_clip")
skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

TOL = 1e-5
CAPTIONS = ["a photo of an astronaut", "a cat lying on a blanket", "a cup of coffee on a saucer"]


def _clip(**text):
    torch.manual_seed(0)
    model = vlkit.create_model(
        "clip-tiny", vision={"image_size": 64, "act": text.get("act", "quick_gelu")}, text=text
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.logit_scale.fill_(3.5)
    return model


@pytest.mark.parametrize("text", [{}, {"act": "gelu", "eos_token_id": 49407, "norm_eps": 1e-6}])
def test_open_clip_loads_a_vlkit_clip(tmp_path, capsys, text):
    """A CLIP folder as `vlkit train` writes it (quick_gelu, argmax pooling) and one with GELU,
    end-of-text pooling and another LayerNorm eps."""
    model = _clip(**text)
    src = model.save_pretrained(tmp_path / "model")
    out = tmp_path / "oc"
    assert cli_main(["convert", str(src), "--to", "open_clip", str(out)]) == 0
    assert "'clip' tokenizer" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]

    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    ref.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")
    photos = [Image.fromarray(getattr(skimage_data, name)()) for name in ("astronaut", "chelsea", "coffee")]
    ours_pre = vlkit.image_transform(model)
    pixels = torch.stack([ours_pre(p) for p in photos])
    assert max_diff(torch.stack([preprocess(p) for p in photos]), pixels) <= 1e-6
    tokens = vlkit.get_tokenizer("clip")(CAPTIONS)
    assert torch.equal(tokenizer(CAPTIONS), tokens["input_ids"])
    with torch.no_grad():
        assert max_diff(ref.encode_image(pixels), model.encode_image(pixels)) <= TOL
        assert max_diff(ref.encode_text(tokens["input_ids"]), model.encode_text(tokens["input_ids"])) <= TOL
        _, _, scale = ref(pixels, tokens["input_ids"])
    assert scale.item() == pytest.approx(model.scale().item())

    back = vlkit.from_pretrained(out)  # and vlkit reads it back: the same model, its tokenizer known
    assert back.config == model.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert back.tokenizer.encode("a cat") == vlkit.get_tokenizer("clip").encode("a cat")


def test_open_clip_refusals(tmp_path, capsys):
    """A tokenizer open_clip does not use, an activation it lacks, an existing output: one-line
    errors, nothing written or replaced."""
    from vlkit.tokenizers import WordTokenizer

    model = _clip()
    words = WordTokenizer(["[PAD]", "[UNK]", *[f"w{i}" for i in range(49406)]])
    src = model.save_pretrained(tmp_path / "model", tokenizer=words)
    assert cli_main(["convert", str(src), "--to", "open_clip", str(tmp_path / "oc")]) == 2
    assert "--to hf" in capsys.readouterr().err and not (tmp_path / "oc").exists()

    tanh = vlkit.create_model("clip-tiny", vision={"act": "gelu_tanh"}, text={"act": "gelu_tanh"})
    tanh.save_pretrained(tmp_path / "tanh")
    assert cli_main(["convert", str(tmp_path / "tanh"), "--to", "open_clip", str(tmp_path / "oc")]) == 2
    assert "gelu_tanh" in capsys.readouterr().err and not (tmp_path / "oc").exists()

    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "keep.txt").write_text("mine")
    assert cli_main(["convert", str(tmp_path / "tanh"), "--to", "vlkit", str(tmp_path / "oc")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "oc" / "keep.txt").read_text() == "mine"
