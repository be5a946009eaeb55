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
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
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
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        vlkit.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertForQuestionAnswering"]})
    )
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
    cfg = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    transformers.ViTModel(cfg).save_pretrained(tmp_path)
    assert vlkit.from_pretrained(tmp_path).config.image_mean == (0.5, 0.5, 0.5)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "resample": 3,
                "do_center_crop": True,
            }
        )
    )
    c = vlkit.from_pretrained(tmp_path).config
    assert (c.image_mean, c.image_std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert (c.interpolation, c.resize_mode) == ("bicubic", "shortest")
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5]}))
    with pytest.raises(ValueError, match="image_mean"):
        vlkit.from_pretrained(tmp_path)


# ------------------------------------------------------------- faults a user can meet: one line, the file named


def _convert_error(capsys, source, out) -> str:
    """`vlkit convert SOURCE --to vlkit OUT` fails with one line on stderr (no traceback); nothing written."""
    from vlkit.cli import main as cli_main

    assert cli_main(["convert", str(source), "--to", "vlkit", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlkit convert: error: ") and len(err.splitlines()) == 1, err
    assert not out.exists()
    return err


@pytest.mark.parametrize("cut", [0, 7, 200, -100])
def test_truncated_or_empty_safetensors(tmp_path, capsys, cut):
    model_dir = vlkit.create_model("bert-tiny").save_pretrained(tmp_path / "m")
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        vlkit.from_pretrained(model_dir)
    err = _convert_error(capsys, model_dir, tmp_path / "out")
    assert str(weights) in err and ("empty" in err if cut == 0 else "truncated" in err)


def test_refused_pickle_is_one_line(tmp_path, capsys):
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    cfg.save_pretrained(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pickle code ran",))

    torch.save({"x": Evil()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: torch\.load\(weights_only=True\) refused it"):
        vlkit.from_pretrained(tmp_path)
    err = _convert_error(capsys, tmp_path, tmp_path / "out")
    assert "(it calls print)" in err and "safetensors" in err
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    assert "not a readable PyTorch weights file" in _convert_error(capsys, tmp_path, tmp_path / "out")


@pytest.mark.parametrize(
    "config, expected",
    [
        ([1, 2, 3], "config.json holds a JSON list; expected a model config object"),
        ('{"vlkit_model_type": "bert"', "config.json is not valid JSON"),
        ({"vlkit_model_type": "bert"}, "'config' is missing"),
        ({"vlkit_model_type": "bert", "config": 3}, "'config' is 3"),
        (
            {"vlkit_model_type": "bert", "config": {"hidden_size": "abc"}},
            "BertConfig.hidden_size must be an integer, got 'abc'",
        ),
        ({"vlkit_model_type": "bert", "config": {"norm_eps": "1e-12"}}, "BertConfig.norm_eps must be a number"),
        (
            {"vlkit_model_type": "clip", "config": {"vision": 5}},
            "CLIPConfig.vision must be a mapping of ViTConfig fields",
        ),
        (
            {"vlkit_model_type": "clip", "config": {"vision": {"image_mean": [0.5, 0.5]}}},
            "ViTConfig.image_mean must be a list of 3",
        ),
        ({"vlkit_model_type": "nope", "config": {}}, "unknown vlkit model type 'nope'"),
        ({"model_type": "bert"}, "HF bert config lacks or mistypes 'vocab_size'"),
    ],
)
def test_bad_config_json(tmp_path, capsys, config, expected):
    model_dir = vlkit.create_model("bert-tiny").save_pretrained(tmp_path / "m")
    (model_dir / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    with pytest.raises(CheckpointError) as e:
        vlkit.from_pretrained(model_dir)
    assert expected in str(e.value) and len(str(e.value).splitlines()) == 1
    assert expected in _convert_error(capsys, model_dir, tmp_path / "out")


def test_create_model_rejects_mistyped_fields():
    with pytest.raises(ValueError, match="BertConfig.hidden_size must be an integer, got '64'"):
        vlkit.create_model("bert-tiny", hidden_size="64")
    with pytest.raises(ValueError, match="CLIPTextConfig.eos_token_id must be an integer or null"):
        vlkit.create_model("clip-tiny", text={"eos_token_id": 1.5})
    assert vlkit.create_model("bert-tiny", dropout=0).config.dropout == 0  # an int is a number


def test_convert_onto_an_existing_output(tmp_path, capsys, monkeypatch):
    """Refused unless --overwrite; with it the output is replaced whole; a write that fails leaves
    the old output as it was and no temporary folder behind."""
    from vlkit.cli import main as cli_main

    src = vlkit.create_model("bert-tiny").save_pretrained(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert cli_main(["convert", str(src), "--to", "vlkit", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and (out / "old.txt").is_file()

    import safetensors.torch

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", fail)
    try:  # the disk fills up while the weights are written
        rc = cli_main(["convert", str(src), "--to", "vlkit", str(out), "--overwrite"])
    except OSError:
        rc = None
    assert rc != 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()

    assert cli_main(["convert", str(src), "--to", "vlkit", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_saved_files_get_the_normal_mode(tmp_path, umask):
    import os
    import stat

    from vlkit.cli import main as cli_main

    old = os.umask(umask)
    try:
        model_dir = vlkit.create_model("bert-tiny").save_pretrained(
            tmp_path / "m", tokenizer=vlkit.get_tokenizer("bert-base-uncased")
        )
        assert (
            cli_main(
                ["convert", str(model_dir), "--to", "hf", str(tmp_path / "hf"), "--tokenizer", "bert-base-uncased"]
            )
            == 2
        )  # 1000 tokens in bert-tiny: refused
        model = vlkit.create_model("bert-tiny", vocab_size=30522)
        model_dir = model.save_pretrained(tmp_path / "m2", tokenizer=vlkit.get_tokenizer("bert-base-uncased"))
        assert cli_main(["convert", str(model_dir), "--to", "hf", str(tmp_path / "hf")]) == 0
    finally:
        os.umask(old)
    for folder in (model_dir, tmp_path / "hf"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask, folder
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


# ------------------------------------------------------------- the tokenizer lives in the model folder


def test_save_pretrained_keeps_the_tokenizer(tmp_path):
    tok = vlkit.get_tokenizer("bert-base-uncased")
    model = vlkit.create_model("bert-tiny", vocab_size=30522)
    folder = model.save_pretrained(tmp_path / "a", tokenizer=tok)
    assert vlkit.get_tokenizer(folder).encode("Hello, world!") == tok.encode("Hello, world!")
    loaded = vlkit.from_pretrained(folder)
    assert loaded.config == model.config
    # the loaded model carries its folder's tokenizer into every folder it is saved to
    second = loaded.save_pretrained(tmp_path / "b")
    assert (second / "vlkit_tokenizer.json").is_file()
    assert vlkit.get_tokenizer(second).encode("naïve café") == tok.encode("naïve café")
    assert vlkit.from_pretrained(second).tokenizer.vocab_size == 30522
    # a tokenizer set on the model travels too; a model without one writes none
    bare = vlkit.create_model("bert-tiny")
    assert bare.tokenizer is None and vlkit.from_pretrained(bare.save_pretrained(tmp_path / "c")).tokenizer is None
    bare.tokenizer = vlkit.get_tokenizer("clip")
    assert vlkit.get_tokenizer(bare.save_pretrained(tmp_path / "d")).vocab_size == 49408


def test_hf_folder_tokenizer_comes_with_the_model(tmp_path):
    """An HF folder's tokenizer files (transformers 5 writes the image processor into
    processor_config.json) are read with the model and written into its vlkit folder."""
    cfg = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    transformers.BertModel(cfg).save_pretrained(tmp_path / "hf")
    bert_tokenizer = vlkit.get_tokenizer("bert-base-uncased").save(tmp_path / "t")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(bert_tokenizer))
    hf_tok.save_pretrained(tmp_path / "hf")
    model = vlkit.from_pretrained(tmp_path / "hf")
    text = "The Quick brown fox, jumping!"
    assert model.tokenizer.encode(text, add_special_tokens=True) == hf_tok(text)["input_ids"]
    folder = model.save_pretrained(tmp_path / "vlkit")
    assert vlkit.get_tokenizer(folder).encode(text, add_special_tokens=True) == hf_tok(text)["input_ids"]

    vit = transformers.ViTModel(
        transformers.ViTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    )
    vit.save_pretrained(tmp_path / "vit")
    (tmp_path / "vit" / "processor_config.json").write_text(
        json.dumps(
            {"processor_class": "X", "image_processor": {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.3, 0.2, 0.1]}}
        )
    )
    assert vlkit.from_pretrained(tmp_path / "vit").config.image_mean == (0.1, 0.2, 0.3)
