"""ViLT: parity with HF transformers' ViltModel and its three heads (random weights, tiny configs,
float32), the round trip back to HF, position embeddings at another image size, the pixel mask.

HF samples the image patches in a random order; the tests read that order from HF's own
``visual_embed`` under the same seed and put vlkit's image rows in it before comparing."""

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.models.vilt import Vilt, ViltConfig

transformers = pytest.importorskip("transformers")

VOCAB, T = 99, 7
HF_TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=16,
    image_size=32,
    patch_size=8,
)
HF_CLASSES = {
    "ViltModel": "ViltModel",
    "mlm": "ViltForMaskedLM",
    "vqa": "ViltForQuestionAnswering",
    "retrieval": "ViltForImageAndTextRetrieval",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def hf_model(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    extra = {"id2label": {i: f"answer{i}" for i in range(5)}} if kind == "vqa" else {}
    config = transformers.ViltConfig(**HF_TINY, **extra)
    model = getattr(transformers, HF_CLASSES[kind])(config).eval()
    with torch.no_grad():  # HF initialises some parts to zeros/ones: make every weight count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(B: int = 2, size: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(B, 3, size, size, generator=g)
    ids = torch.randint(5, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -2:] = 0  # padded text
    return pixels, ids, mask


def hf_patch_order(hf, pixels, pixel_mask=None, seed: int = 123) -> torch.Tensor:
    """The row-major patch index (B, N) HF visits under ``torch.manual_seed(seed)``."""
    vilt = getattr(hf, "vilt", hf)
    if pixel_mask is None:
        pixel_mask = torch.ones(pixels.shape[0], *pixels.shape[2:], dtype=torch.long)
    torch.manual_seed(seed)
    _, _, (patch_index, (_, width)) = vilt.embeddings.visual_embed(pixels, pixel_mask, max_image_length=-1)
    return patch_index[..., 0] * width + patch_index[..., 1]


def hf_forward(hf, seed: int = 123, **kw):
    torch.manual_seed(seed)
    with torch.no_grad():
        return hf(**kw, output_hidden_states=True)


def in_hf_order(hidden: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """vlkit's states (B, T + 1 + N, H) with the N patch rows put in HF's order (B, N)."""
    text_and_cls = hidden.shape[1] - order.shape[1]
    patches = hidden[:, text_and_cls:].gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
    return torch.cat([hidden[:, :text_and_cls], patches], dim=1)


@pytest.mark.parametrize("kind", ["ViltModel", "mlm", "vqa", "retrieval"])
def test_parity_with_hf(tmp_path, kind):
    hf = hf_model(kind)
    model = vlkit.from_pretrained(save_hf(hf, tmp_path))
    assert isinstance(model, Vilt)
    pixels, ids, mask = inputs()
    order = hf_patch_order(hf, pixels)
    out = hf_forward(hf, pixel_values=pixels, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        hidden = model(pixels, ids, mask)  # (B, T + 1 + N, H)
    assert hidden.shape == (2, T + 1 + 16, 32)
    hf_hidden = hf.vilt.layernorm(out.hidden_states[-1]) if kind != "ViltModel" else out.last_hidden_state
    assert max_diff(in_hf_order(hidden, order), hf_hidden) <= 1e-5
    with torch.no_grad():
        if kind == "ViltModel":
            assert max_diff(model.pool(hidden), out.pooler_output) <= 1e-5
        elif kind == "mlm":
            logits = model.mlm_logits(pixels, ids, mask)
            assert logits.shape == (2, T, VOCAB) and max_diff(logits, out.logits) <= 1e-5
        elif kind == "vqa":
            logits = model.vqa_logits(pixels, ids, mask)
            assert logits.shape == (2, 5) and max_diff(logits, out.logits) <= 1e-5
            assert model.config.answers == tuple(f"answer{i}" for i in range(5))
        else:
            scores = model.retrieval_scores(pixels, ids, mask)
            assert scores.shape == (2,) and max_diff(scores, out.logits[:, 0]) <= 1e-5


@pytest.mark.parametrize("kind", ["mlm", "vqa", "retrieval"])
def test_round_trip_to_hf(tmp_path, kind):
    from vlkit.tokenizers.wordpiece import WordPieceTokenizer

    hf = hf_model(kind, seed=3)
    model = vlkit.from_pretrained(save_hf(hf, tmp_path / "hf"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    export_hf(model, tmp_path / "out", tokenizer=WordPieceTokenizer(tokens))
    back = getattr(transformers, HF_CLASSES[kind]).from_pretrained(tmp_path / "out").eval()
    ref, new = hf.state_dict(), back.state_dict()
    assert set(ref) == set(new)
    assert all(torch.equal(ref[k], new[k]) for k in ref)
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out").vocab_size == VOCAB


def test_several_heads_are_written_as_several_hf_folders(tmp_path):
    from vlkit.tokenizers.wordpiece import WordPieceTokenizer

    torch.manual_seed(0)
    model = vlkit.create_model("vilt-tiny", vocab_size=VOCAB, rank_head=True, answers=("yes", "no")).eval()
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    export_hf(model, tmp_path, tokenizer=WordPieceTokenizer(tokens))
    pixels, ids, mask = inputs()
    vqa = transformers.ViltForQuestionAnswering.from_pretrained(tmp_path).eval()
    rank = transformers.ViltForImageAndTextRetrieval.from_pretrained(tmp_path / "retrieval").eval()
    mlm = transformers.ViltForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    with torch.no_grad():
        assert max_diff(vqa(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits,
                        model.vqa_logits(pixels, ids, mask)) <= 1e-5  # fmt: skip
        assert max_diff(rank(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits[:, 0],
                        model.retrieval_scores(pixels, ids, mask)) <= 1e-5  # fmt: skip
        assert max_diff(mlm(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits,
                        model.mlm_logits(pixels, ids, mask)) <= 1e-5  # fmt: skip
    assert vqa.config.id2label == {0: "yes", 1: "no"}


def test_interpolated_positions_at_another_image_size(tmp_path):
    """48 px images (a 6x6 grid) on a model built for 32 px (4x4): HF resamples the positions
    bilinearly with aligned corners, and so does vlkit."""
    hf = hf_model("ViltModel", seed=5)
    model = vlkit.from_pretrained(save_hf(hf, tmp_path))
    pixels, ids, mask = inputs(size=48)
    order = hf_patch_order(hf, pixels)
    out = hf_forward(hf, pixel_values=pixels, input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        hidden = model(pixels, ids, mask)
    assert hidden.shape == (2, T + 1 + 36, 32)
    assert max_diff(in_hf_order(hidden, order), out.last_hidden_state) <= 1e-5


def test_pixel_mask_matches_hf_on_the_real_patches(tmp_path):
    """Image 0 is real on its top-left 24x16 pixels (3x2 patches), image 1 everywhere: the text,
    the image [CLS] and every real patch agree with HF (HF puts the real patches first, in order,
    and pads with masked ones), and padding changes nothing real."""
    hf = hf_model("vqa", seed=7)
    model = vlkit.from_pretrained(save_hf(hf, tmp_path))
    pixels, ids, mask = inputs()
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.long)
    pixel_mask[0, 24:, :] = 0
    pixel_mask[0, :, 16:] = 0
    out = hf_forward(hf, pixel_values=pixels, input_ids=ids, attention_mask=mask, pixel_mask=pixel_mask)
    with torch.no_grad():
        hidden = model(pixels, ids, mask, pixel_mask=pixel_mask)
        logits = model.vqa_logits(pixels, ids, mask, pixel_mask=pixel_mask)
    assert max_diff(logits, out.logits) <= 1e-5
    hf_hidden = hf.vilt.layernorm(out.hidden_states[-1])
    real = [r * 4 + c for r in range(3) for c in range(2)]  # row-major patch indices of image 0
    ours = hidden[0, : T + 1][None], hidden[0, T + 1 + torch.tensor(real)][None]
    assert max_diff(torch.cat(ours, 1), hf_hidden[0, : T + 1 + len(real)][None]) <= 1e-5
    # the padding pixels do not matter: change them and the real states stay
    noisy = pixels.clone()
    noisy[0, :, 24:, :] = 5.0
    with torch.no_grad():
        again = model(noisy, ids, mask, pixel_mask=pixel_mask)
    keep = torch.tensor(list(range(T + 1)) + [T + 1 + i for i in real])
    assert max_diff(again[0, keep], hidden[0, keep]) <= 1e-6


def test_heads_and_errors():
    torch.manual_seed(0)
    model = vlkit.create_model("vilt-tiny", vocab_size=VOCAB).eval()
    pixels, ids, mask = inputs()
    with torch.no_grad():
        assert model.itm_logits(pixels, ids, mask).shape == (2, 2)
        assert model.mlm_logits(pixels, ids, mask).shape == (2, T, VOCAB)
    with pytest.raises(ValueError, match="no vqa head"):
        model.vqa_logits(pixels, ids, mask)
    with pytest.raises(ValueError, match="no rank head"):
        model.retrieval_scores(pixels, ids, mask)
    with pytest.raises(ValueError, match="pairs"):
        model(pixels[:1], ids, mask)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViltConfig(image_size=30, patch_size=8)


def test_save_and_load_vlkit_folder(tmp_path):
    torch.manual_seed(0)
    model = vlkit.create_model("vilt-tiny", vocab_size=VOCAB, answers=("yes", "no", "red")).eval()
    model.save_pretrained(tmp_path)
    again = vlkit.from_pretrained(tmp_path)
    pixels, ids, mask = inputs()
    with torch.no_grad():
        assert torch.equal(again.vqa_logits(pixels, ids, mask), model.vqa_logits(pixels, ids, mask))
    assert again.config.answers == ("yes", "no", "red")


def test_exported_folder_works_with_hf_vilt_processor(tmp_path):
    """transformers' ViltProcessor on the exported folder gives vlkit's pixels and ids, and
    ViltForQuestionAnswering on them vlkit's answer logits."""
    from vlkit.data.synthetic import ShapesDataset, shapes_tokenizer

    tok = shapes_tokenizer()
    torch.manual_seed(0)
    model = vlkit.create_model("vilt-tiny", vocab_size=tok.vocab_size, answers=("yes", "no", "red")).eval()
    export_hf(model, tmp_path, tokenizer=tok)
    processor = transformers.ViltProcessor.from_pretrained(tmp_path)
    image = ShapesDataset("validation", size=1, image_size=32).image(0)
    enc = processor(images=image, text="what colour is the square?", return_tensors="pt")
    pixels = vlkit.image_transform(model)(image)[None]
    ids = tok(["what colour is the square?"])
    assert torch.equal(enc["pixel_values"], pixels) and torch.equal(enc["input_ids"], ids["input_ids"])
    hf = transformers.ViltForQuestionAnswering.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert max_diff(hf(**enc).logits, model.vqa_logits(pixels, ids["input_ids"], ids["attention_mask"])) <= 1e-5
