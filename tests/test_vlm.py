"""The LLaVA-style VLM: parity with HF LlavaForConditionalGeneration on random tiny models
(float32) with OPT and GPT-2 language models, image tokens given expanded or once per image,
several images per prompt, left-padded batches, the image-token count errors, and the HF round trip."""

import json

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.models import VLM, OPTConfig, VLMConfig
from vlkit.models.clip import clip_vision_config
from vlkit.models.registry import FAMILIES

transformers = pytest.importorskip("transformers")
TOL = 1e-4
V, IMG, SIZE = 97, 96, 16  # vocabulary, image token id, image side (2 x 2 patches of 8)
NEEDS_LLAMA = pytest.mark.skipif("llama" not in FAMILIES, reason="no Llama family in this checkout")
FAMILY = {"opt": "opt", "gpt2": "gpt", "llama": "llama"}  # HF text model type -> vlkit family


@pytest.fixture(scope="module", autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()


def _text_config(kind):
    # transformers ties LLaVA's LM head only for Llama-style names: OPT and GPT-2 are built untied
    if kind == "llama":  # grouped-query attention, an odd rotary base, the head tied
        return transformers.LlamaConfig(
            vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=128, rope_theta=500.0, bos_token_id=2, eos_token_id=2,
            tie_word_embeddings=True,
        )  # fmt: skip
    if kind == "opt":
        return transformers.OPTConfig(
            vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
            max_position_embeddings=128, tie_word_embeddings=False,
        )  # fmt: skip
    return transformers.GPT2Config(
        vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=128, bos_token_id=2, eos_token_id=2,
        tie_word_embeddings=False,
    )  # fmt: skip


def _llava(tmp_path, kind="opt", strategy="default", layer=-2):
    """A random tiny LLaVA (3-layer CLIP tower, weights perturbed off their init) and vlkit's load of it."""
    vision = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=SIZE, patch_size=8
    )
    cfg = transformers.LlavaConfig(
        vision_config=vision,
        text_config=_text_config(kind),
        image_token_index=IMG,
        vision_feature_layer=layer,
        vision_feature_select_strategy=strategy,
    )
    torch.manual_seed(0)
    ref = transformers.LlavaForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if kind == "gpt2":  # vlkit's GPT ties its head: give HF's the embedding's values
            ref.lm_head.weight.copy_(ref.get_input_embeddings().weight)
    model = vlkit.from_pretrained(save_hf(ref, tmp_path / "hf"))
    assert isinstance(model, VLM) and model.config.text_model_type == FAMILY[kind]
    return ref, model


def _prompt(images_per_row, text_len=5, F=4, expand=True, seed=0):
    """One row per entry: BOS, then per image its token(s) and some text."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n in images_per_row:
        row = [2]
        for _ in range(n):
            row += [IMG] * (F if expand else 1) + torch.randint(3, IMG, (2,), generator=g).tolist()
        rows.append(row + torch.randint(3, IMG, (text_len,), generator=g).tolist())
    return rows


def _left_pad(rows, pad=1):
    L = max(map(len, rows))
    ids = torch.tensor([[pad] * (L - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (L - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def _pixels(n, seed=1):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "kind, strategy, layer",
    [
        ("opt", "default", -2),
        ("gpt2", "default", -2),
        ("opt", "full", -1),
        ("gpt2", "full", 1),
        pytest.param("llama", "default", -2, marks=NEEDS_LLAMA),
    ],
)
def test_logits_parity(tmp_path, kind, strategy, layer):
    ref, model = _llava(tmp_path, kind, strategy, layer)
    F = model.config.num_image_tokens
    assert (4 if strategy == "default" else 5) == F
    ids = torch.tensor(_prompt([1, 1], F=F))
    pixels = _pixels(2)
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pixels).logits
        got = model(pixels, ids)
    assert got.shape == (2, ids.shape[1], V)
    assert max_diff(got, expected) <= TOL


def test_several_images_per_prompt_and_once_per_image(tmp_path):
    """Rows with 2 and 1 images: HF's expanded prompt, vlkit's once-per-image prompt (expanded and
    left-padded inside) and each row alone agree."""
    ref, model = _llava(tmp_path)
    pixels = _pixels(3)
    rows = _prompt([2, 1])
    short = _prompt([2, 1], expand=False)
    with torch.no_grad():
        expected = [ref(input_ids=torch.tensor([rows[0]]), pixel_values=pixels[:2]).logits[0],
                    ref(input_ids=torch.tensor([rows[1]]), pixel_values=pixels[2:]).logits[0]]  # fmt: skip
        ids, mask = _left_pad(rows)
        batch = model(pixels, ids, mask)
        ids_short, mask_short = _left_pad(short)
        batch_short = model(pixels, ids_short, mask_short)
    for i, row in enumerate(rows):
        assert max_diff(batch[i, -len(row) :], expected[i]) <= TOL
        # once per image: the logits at each given token, an image token's after its last feature
        keep = [j for j, t in enumerate(row) if t != IMG or j + 1 == len(row) or row[j + 1] != IMG]
        assert max_diff(batch_short[i, -len(short[i]) :], expected[i][keep]) <= TOL


def test_image_token_count_errors(tmp_path):
    _, model = _llava(tmp_path)
    pixels = _pixels(2)
    ids = torch.tensor(_prompt([1, 1]))
    ids[0, 1] = 5  # 7 image tokens for 2 images of 4 features
    with pytest.raises(ValueError, match=r"hold 7 image tokens \(id 96\) for 2 image\(s\); expected 2 .* or 8"):
        model(pixels, ids)
    with pytest.raises(ValueError, match=r"hold 8 image tokens \(id 96\) for 1 image\(s\); expected 1 .* or 4"):
        model(pixels[:1], torch.tensor(_prompt([1, 1])))
    with pytest.raises(ValueError, match="hold 2 image tokens .* for 0 image"):
        model(None, torch.tensor(_prompt([1, 1], expand=False)))
    uneven = torch.tensor(_prompt([1, 1]))
    uneven[0, 1], uneven[1, -1] = 5, IMG  # 8 in all, but 3 and 5 per row
    with pytest.raises(ValueError, match="row 0 of input_ids holds 3 image tokens, not a multiple of the 4"):
        model(pixels, uneven)
    with pytest.raises(ValueError, match="hold 2 image tokens .* for 1 image"):
        model.generate(pixels[:1], torch.tensor(_prompt([1, 1], expand=False)), max_new_tokens=2)


@pytest.mark.parametrize("kind", ["opt", "gpt2", pytest.param("llama", marks=NEEDS_LLAMA)])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_identical(tmp_path, kind, num_beams):
    ref, model = _llava(tmp_path, kind)
    ids = torch.tensor(_prompt([1, 1]))
    pixels = _pixels(2)
    kw = dict(max_new_tokens=8, num_beams=num_beams, eos_token_id=None, pad_token_id=1)
    with torch.no_grad():
        expected = ref.generate(input_ids=ids, pixel_values=pixels, do_sample=False, **kw)
        got = model.generate(pixels, ids, **kw)
        short = torch.tensor(_prompt([1, 1], expand=False))
        got_short = model.generate(pixels, short, **kw)
    assert torch.equal(got, expected)
    assert torch.equal(got_short[:, : short.shape[1]], short)  # the prompt as given, then the new tokens
    assert torch.equal(got_short[:, short.shape[1] :], expected[:, ids.shape[1] :])


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_generation(tmp_path, num_beams):
    """Prompts of different lengths (2 images and 1), left-padded: HF's batch, vlkit's batch and
    vlkit's rows one by one give the same tokens."""
    ref, model = _llava(tmp_path)
    pixels = _pixels(3)
    rows = _prompt([2, 1], text_len=3)
    ids, mask = _left_pad(rows)
    kw = dict(max_new_tokens=6, num_beams=num_beams, eos_token_id=2, pad_token_id=1)
    with torch.no_grad():
        expected = ref.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, do_sample=False, **kw)
        got = model.generate(pixels, ids, attention_mask=mask, **kw)
        alone = [model.generate(pixels[:2], torch.tensor([rows[0]]), **kw)[0],
                 model.generate(pixels[2:], torch.tensor([rows[1]]), **kw)[0]]  # fmt: skip
    assert torch.equal(got, expected)
    for i, row in enumerate(alone):
        n = min(len(row), got.shape[1] - (ids.shape[1] - len(rows[i])))
        assert torch.equal(got[i, ids.shape[1] - len(rows[i]) :][:n], row[:n])


@pytest.mark.parametrize("family", ["opt", pytest.param("llama", marks=NEEDS_LLAMA)])
def test_save_hf_round_trip(tmp_path, family):
    """vlkit VLM (OPT or Llama LLM, tied head) -> save_hf -> transformers LlavaForConditionalGeneration
    gives vlkit's logits; vlkit reads the export back."""
    from pathlib import Path

    from vlkit.models.registry import PRESETS, replace_config
    from vlkit.tokenizers import BPETokenizer

    corpus = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8").splitlines()
    tok = BPETokenizer.train(corpus, 300)
    n = tok.vocab_size
    config = VLMConfig(
        vision=clip_vision_config(image_size=SIZE, patch_size=8, width=32, depth=3, num_heads=4, mlp_dim=64),
        text=OPTConfig(vocab_size=n, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=64)
        if family == "opt"
        else replace_config(PRESETS["llama-tiny"](), vocab_size=n, tie_word_embeddings=True),
        image_token_id=n - 1,
    )
    torch.manual_seed(0)
    model = VLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = export_hf(model, tmp_path / "hf", tokenizer=tok)
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["architectures"] == ["LlavaForConditionalGeneration"] and hf_config["image_seq_length"] == 4
    ref = transformers.LlavaForConditionalGeneration.from_pretrained(str(out)).eval()
    ids = torch.tensor([[2] + [n - 1] * 4 + [5, 6, 7]])
    pixels = _pixels(1)
    with torch.no_grad():
        assert max_diff(ref(input_ids=ids, pixel_values=pixels).logits, model(pixels, ids)) <= TOL
        back = vlkit.from_pretrained(out)
        assert back.config.text.tie_word_embeddings  # the head HF needs written out is the embedding: tied again
        assert torch.equal(back(pixels, ids), model(pixels, ids))


def test_unsupported_refused_by_name(tmp_path):
    from vlkit.convert import hf_llava

    hf = json.loads(json.dumps(transformers.LlavaConfig(text_config=_text_config("opt")).to_dict()))
    with pytest.raises(ValueError, match="vision_feature_layer \\[-2, -1\\]: only one layer"):
        hf_llava.config_from_hf({**hf, "vision_feature_layer": [-2, -1]}, {})
    with pytest.raises(ValueError, match="projector_hidden_act 'relu'"):
        hf_llava.config_from_hf({**hf, "projector_hidden_act": "relu"}, {})
    with pytest.raises(ValueError, match="model_type 't5' is not one vlkit reads"):
        hf_llava.config_from_hf({**hf, "text_config": {"model_type": "t5"}}, {})
    linear = vlkit.create_model("vlm-tiny", projector="linear")
    with pytest.raises(ValueError, match="HF LLaVA has no 'linear' projector"):
        hf_llava.config_to_hf(linear.config)
    with pytest.raises(ValueError, match="a VLM's LLM must be a vlkit decoder; 'vit' lacks embed_tokens"):
        VLM(VLMConfig(text=vlkit.models.ViTConfig(), image_token_id=1))


def test_tiny_preset_and_linear_projector():
    torch.manual_seed(0)
    for projector in ("mlp2x_gelu", "linear"):
        model = vlkit.create_model("vlm-tiny", projector=projector).eval()
        F = model.config.num_image_tokens
        ids = torch.tensor([[0, 999, 5, 6], [0, 7, 999, 8]])
        pixels = torch.randn(2, 3, 32, 32)
        logits = model(pixels, ids)
        assert F == 16 and logits.shape == (2, 4, 1000)
        out = model.generate(pixels, ids, max_new_tokens=3, eos_token_id=None)
        assert out.shape == (2, 7) and torch.equal(out[:, :4], ids)


@pytest.mark.parametrize("layout", ["hub", "in-memory"])
def test_other_key_layouts(tmp_path, layout):
    """transformers 4 / hub folders (``vision_tower.vision_model.*``) and transformers 5's in-memory
    names (``model.vision_tower.*``, ``model.language_model.*``, ``lm_head.weight``) read as the
    layout transformers 5 writes."""
    from safetensors.torch import load_file, save_file

    ref, model = _llava(tmp_path)
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    if layout == "hub":
        state = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): v for k, v in state.items()}
    else:
        state = {
            ("lm_head.weight" if k == "language_model.lm_head.weight" else
             "model." + k.replace("language_model.model.", "language_model.", 1)): v
            for k, v in state.items()
        }  # fmt: skip
    folder = tmp_path / layout
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text((tmp_path / "hf" / "config.json").read_text())
    ids, pixels = torch.tensor(_prompt([1])), _pixels(1)
    with torch.no_grad():
        assert torch.equal(vlkit.from_pretrained(folder)(pixels, ids), model(pixels, ids))


def test_vlkit_folder_round_trip(tmp_path):
    """A VLM with an OPT LLM saved as a vlkit folder: the LLM's family and config come back."""
    torch.manual_seed(0)
    text = vlkit.create_model("opt-tiny").config
    model = vlkit.create_model("vlm-tiny", text=text, text_model_type="opt", image_token_id=998).eval()
    saved = json.loads((model.save_pretrained(tmp_path / "vlm") / "config.json").read_text())
    assert saved["config"]["text_model_type"] == "opt" and saved["config"]["text"]["vocab_size"] == 1000
    back = vlkit.from_pretrained(tmp_path / "vlm")
    assert type(back.llm).__name__ == "OPT" and back.config == model.config
    ids, pixels = torch.tensor([[2, 998, 5, 6]]), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(pixels, ids), model(pixels, ids))
    with pytest.raises(ValueError, match="text_model_type 'gpt' but text is a OPTConfig"):
        vlkit.create_model("vlm-tiny", text=text)
