"""save_pretrained / from_pretrained round trips, .bin checkpoints, and clear errors."""
import json

import pytest
import torch

import vlkit
from vlkit import CheckpointError

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["bert-tiny", "gpt-tiny", "vit-tiny"])
def test_save_load_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = vlkit.create_model(name).eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = vlkit.from_pretrained(tmp_path)
    assert loaded.config == model.config
    x = torch.randn(2, 3, 32, 32) if name == "vit-tiny" else torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_tied_weights_stay_tied(tmp_path):
    model = vlkit.create_model("gpt-tiny")
    model.save_pretrained(tmp_path)
    loaded = vlkit.from_pretrained(tmp_path)
    assert loaded.logits(torch.zeros(1, 32)).shape == (1, 1000)
    bert = vlkit.create_model("bert-tiny")
    assert bert.mlm_head is not None  # decoder is the token embedding itself: nothing else to store


def test_create_model_overrides_and_unknown():
    m = vlkit.create_model("bert-tiny", num_layers=3)
    assert len(m.encoder) == 3
    with pytest.raises(KeyError, match="unknown model"):
        vlkit.create_model("no-such-model")
    with pytest.raises(TypeError):
        vlkit.create_model("bert-tiny", no_such_field=1)


def test_pytorch_bin_is_read_without_pickle_code(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=32)
    ref = transformers.BertModel(cfg).eval()
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model = vlkit.from_pretrained(tmp_path)
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        assert torch.allclose(model.encode(ids), ref(ids).last_hidden_state, atol=1e-5)

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        vlkit.from_pretrained(tmp_path)


def test_mismatched_layout_names_missing_and_unexpected_keys(tmp_path):
    model = vlkit.create_model("bert-tiny")
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file

    sd = load_file(tmp_path / "model.safetensors")
    sd["encoder.blocks.0.attn.extra"] = torch.zeros(1)
    del sd["pooler.weight"]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        vlkit.from_pretrained(tmp_path)
    assert "pooler.weight" in str(e.value) and "encoder.blocks.0.attn.extra" in str(e.value)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vlkit.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        vlkit.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        vlkit.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForQuestionAnswering"]}))
    with pytest.raises(CheckpointError, match="not supported"):
        vlkit.from_pretrained(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        vlkit.from_pretrained(f)
    with pytest.raises(FileNotFoundError, match="hub"):
        vlkit.from_pretrained("nobody-xyz/not-a-model")  # offline in tests: a clear error, no hang


def test_hf_image_processor_config_sets_preprocessing(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8)
    transformers.ViTModel(cfg).save_pretrained(tmp_path)
    assert vlkit.from_pretrained(tmp_path).config.image_mean == (0.5, 0.5, 0.5)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "resample": 3, "do_center_crop": True}))
    c = vlkit.from_pretrained(tmp_path).config
    assert (c.image_mean, c.image_std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (c.interpolation, c.resize_mode) == ("bicubic", "shortest")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5]}))
    with pytest.raises(ValueError, match="image_mean"):
        vlkit.from_pretrained(tmp_path)
