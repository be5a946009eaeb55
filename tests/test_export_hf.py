"""`vlkit convert --to hf` folders work in transformers as they are: its pipelines (zero-shot image
classification, image-to-text, fill-mask, text generation, image features) on exports of tiny random
models give vlkit's results, and AutoTokenizer / AutoProcessor give vlkit's token ids."""

import json

import pytest
import torch

import vlkit
from helpers import max_diff
from vlkit.cli import main as cli_main

transformers = pytest.importorskip("transformers")
skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

TOL = 1e-5
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TEXTS = ["a photo of a cat", "Hello, World!  it's 3 dogs.", "naïve café: ünïcödé — 北京", "  spaces   and\ttabs "]


@pytest.fixture(scope="module", autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def photos():
    return [Image.fromarray(getattr(skimage_data, name)()) for name in PHOTOS]


def _perturb(model, scale: float = 0.1):
    """Random weights further from their init, so that every parameter matters."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def _convert(src, out, *extra) -> None:
    assert cli_main(["convert", str(src), "--to", "hf", str(out), *extra]) == 0


def _same_ids(hf_tokenizer, tok, texts=TEXTS) -> None:
    for text in texts:
        assert hf_tokenizer(text)["input_ids"] == tok.encode(text, add_special_tokens=True), text


# ---------------------------------------------------------------------- CLIP


def test_clip_zero_shot_pipeline_gives_vlkit_probabilities(tmp_path, photos, capsys):
    """A CLIP folder as `vlkit train` writes it (no tokenizer files) -> `vlkit convert --to hf`:
    the recipe's tokenizer is written (with a note), and transformers' zero-shot pipeline scores
    the photos as vlkit does (before the fix it built an empty tokenizer: every id 2)."""
    from vlkit.eval.zeroshot import zeroshot_classifier, zeroshot_logits

    torch.manual_seed(0)
    model = _perturb(vlkit.create_model("clip-tiny", vision={"image_size": 64})).eval()
    with torch.no_grad():
        model.logit_scale.fill_(4.0)
    src = model.save_pretrained(tmp_path / "run" / "model")
    _convert(src, tmp_path / "hf")
    assert "holds no tokenizer; writing vlkit's 'clip' tokenizer" in capsys.readouterr().out

    labels, template = ["astronaut", "cat", "coffee", "rocket"], "a photo of a {}."
    tok = vlkit.get_tokenizer("clip")
    with torch.no_grad():
        pixels = torch.stack([vlkit.image_transform(model)(p) for p in photos])
        classifier = zeroshot_classifier(model, tok, labels, [template])
        ours = (model.scale() * zeroshot_logits(model.encode_image(pixels), classifier)).softmax(-1)  # (4, 4)

    pil = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "hf"), backend="pil")
    # HF's default torchvision resize differs from PIL's by ~1/255 a pixel: 2e-5 to 1.5e-4 in the scores here
    for processor, tol in ((pil, TOL), (None, 1e-3)):
        kwargs = {} if processor is None else {"image_processor": processor}
        pipe = transformers.pipeline("zero-shot-image-classification", model=str(tmp_path / "hf"), **kwargs)
        for i, photo in enumerate(photos):
            results = pipe(photo, candidate_labels=labels, hypothesis_template=template)
            scores = {r["label"]: r["score"] for r in results}
            assert max(abs(scores[c] - ours[i, j].item()) for j, c in enumerate(labels)) <= tol
    assert ours.max() > 0.5  # the probabilities are far from uniform: the comparison means something

    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    _same_ids(hf_tok, tok, [t for t in TEXTS if "—" not in t])  # HF's CLIP cleans text without ftfy
    assert pil(photos[0], return_tensors="pt")["pixel_values"].sub(pixels[:1]).abs().max() <= 1e-6
    processor = transformers.AutoProcessor.from_pretrained(str(tmp_path / "hf"))
    assert type(processor).__name__ == "CLIPProcessor"


# ---------------------------------------------------------------------- BLIP


@pytest.fixture(scope="module")
def blip_export(tmp_path_factory, photos):
    """A BLIP captioner with retrieval heads (as `vlkit train` writes it, tokenizer included) and
    its HF export; the photos as files."""
    root = tmp_path_factory.mktemp("blip")
    torch.manual_seed(0)
    model = _perturb(vlkit.create_model("blip-tiny"), 0.2).eval()
    src = model.save_pretrained(root / "model", tokenizer=vlkit.get_tokenizer("bert-base-uncased"))
    _convert(src, root / "hf")
    files = []
    for name, photo in zip(PHOTOS[:2], photos[:2], strict=True):
        files.append(root / f"{name}.png")
        photo.save(files[-1])
    return model, src, root / "hf", files


@pytest.mark.parametrize("prompt", ["", "a picture of"])
def test_blip_image_to_text_pipeline_gives_vlkit_captions(blip_export, capsys, prompt):
    model, src, hf, files = blip_export
    # the PIL backend: vlkit's preprocessing (HF's default torchvision resize differs by ~1/255,
    # enough to flip a near tie between two tokens of a random model)
    processor = transformers.AutoProcessor.from_pretrained(str(hf), backend="pil")
    pipe = transformers.pipeline("image-to-text", model=str(hf), processor=processor)
    theirs = pipe([Image.open(f) for f in files], text=[prompt] * len(files), generate_kwargs={"max_new_tokens": 12})
    capsys.readouterr()
    argv = [
        "caption",
        "--model",
        str(src),
        *map(str, files),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "12",
        "--min-length",
        "0",
    ] + (["--prompt", prompt] if prompt else [])
    assert cli_main(argv) == 0
    ours = [line.split("\t", 1)[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert [r[0]["generated_text"] if isinstance(r, list) else r["generated_text"] for r in theirs] == ours
    assert all(len(c.split()) >= 3 for c in ours)  # real captions, not empty strings compared


def test_blip_retrieval_part_and_processor(blip_export, photos):
    """The retrieval heads, which HF holds in another class, are in `retrieval/`; its ITM scores
    are vlkit's; AutoProcessor gives vlkit's ids ([DEC] and [ENC] are special tokens after BERT's)."""
    model, _, hf, _ = blip_export
    ref = transformers.BlipForImageTextRetrieval.from_pretrained(str(hf / "retrieval")).eval()
    processor = transformers.AutoProcessor.from_pretrained(str(hf / "retrieval"))
    assert type(processor).__name__ == "BlipProcessor"
    texts = ["an astronaut in a suit", "a cat"]
    inputs = processor(images=photos[:2], text=texts, return_tensors="pt", padding=True)
    tok = vlkit.get_tokenizer("bert-base-uncased")
    assert inputs["input_ids"].tolist() == tok(texts)["input_ids"].tolist()
    with torch.no_grad():
        theirs = ref(**inputs, use_itm_head=True).itm_score
        ours = model.itm_logits(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    assert max_diff(theirs, ours) <= TOL
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(hf))
    assert hf_tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [
        model.config.text.bos_token_id,
        model.config.text.enc_token_id,
    ]
    assert hf_tok.decode([model.config.text.bos_token_id, 2003], skip_special_tokens=True) == tok.decode([2003])
    # vlkit reads the export back: the captioner, with its tokenizer
    back = vlkit.from_pretrained(hf)
    assert back.config.text_decoder and not back.config.retrieval_heads
    assert back.tokenizer.vocab_size == model.config.text.vocab_size


# ---------------------------------------------------------------------- BERT, GPT-2, ViT


def test_bert_fill_mask_and_features(tmp_path):
    torch.manual_seed(0)
    model = _perturb(vlkit.create_model("bert-tiny", vocab_size=30522)).eval()  # MLM + NSP heads
    tok = vlkit.get_tokenizer("bert-base-uncased")
    _convert(model.save_pretrained(tmp_path / "bert", tokenizer=tok), tmp_path / "hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    _same_ids(hf_tok, tok)

    text = "the capital of france is [MASK]."
    batch = tok([text])
    with torch.no_grad():
        hidden = model.encode(batch["input_ids"], batch["attention_mask"])
        at = batch["input_ids"][0].tolist().index(tok.mask_token_id)
        probs = model.mlm_logits(hidden)[0, at].softmax(-1)
    top = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), top_k=3)(text)
    assert [r["token"] for r in top] == probs.topk(3).indices.tolist()
    assert max(abs(r["score"] - probs[r["token"]].item()) for r in top) <= TOL
    features = transformers.pipeline("feature-extraction", model=str(tmp_path / "hf"))(text, return_tensors=True)
    assert max_diff(features[0] if features.dim() == 3 else features, hidden[0]) <= TOL


def test_gpt2_text_generation(tmp_path):
    from pathlib import Path

    from vlkit.tokenizers import BPETokenizer

    corpus = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8").splitlines()
    tok = BPETokenizer.train(corpus, 400)
    torch.manual_seed(0)
    model = _perturb(
        vlkit.create_model(
            "gpt-tiny", vocab_size=tok.vocab_size, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id
        ),
        0.3,
    ).eval()
    _convert(model.save_pretrained(tmp_path / "gpt", tokenizer=tok), tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert type(hf_tok).__name__ == "GPT2Tokenizer"
    _same_ids(hf_tok, tok)
    prompt = "vlkit trains a tiny"
    ids = torch.tensor([tok.encode(prompt)])
    ours = tok.decode(model.generate(ids, max_new_tokens=10, eos_token_id=None)[0])
    pipe = transformers.pipeline("text-generation", model=str(tmp_path / "hf"))
    theirs = pipe(prompt, max_new_tokens=10, min_new_tokens=10, do_sample=False)[0]["generated_text"]
    assert theirs == ours and len(ours) > len(prompt)


def test_vit_image_features(tmp_path, photos):
    torch.manual_seed(0)
    model = _perturb(vlkit.create_model("vit-tiny")).eval()
    _convert(model.save_pretrained(tmp_path / "vit"), tmp_path / "hf")  # an image model: no tokenizer needed
    pil = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "hf"), backend="pil")
    assert type(pil).__name__.startswith("ViTImageProcessor")
    pipe = transformers.pipeline("image-feature-extraction", model=str(tmp_path / "hf"), image_processor=pil)
    with torch.no_grad():
        ours = model.encode(torch.stack([vlkit.image_transform(model)(p) for p in photos]))
    for i, photo in enumerate(photos):
        theirs = pipe(photo, return_tensors=True)
        assert max_diff(theirs[0], ours[i]) <= TOL


# ---------------------------------------------------------------------- refusals


def test_exports_that_could_not_be_complete_are_refused(tmp_path, capsys):
    """No tokenizer (GPT: no recipe default), a tokenizer of another size, an image transform HF's
    processor cannot do: one-line errors, and nothing written."""
    gpt = vlkit.create_model("gpt-tiny").save_pretrained(tmp_path / "gpt")
    assert cli_main(["convert", str(gpt), "--to", "hf", str(tmp_path / "out")]) == 2
    assert "no tokenizer" in capsys.readouterr().err
    assert cli_main(["convert", str(gpt), "--to", "hf", str(tmp_path / "out"), "--tokenizer", "bert-base-uncased"]) == 2
    assert "30522 tokens but the gpt model's vocabulary has 1000" in capsys.readouterr().err
    blip = vlkit.create_model("blip-tiny", vision={"resize_mode": "shortest"})
    blip.save_pretrained(tmp_path / "blip", tokenizer=vlkit.get_tokenizer("bert-base-uncased"))
    assert cli_main(["convert", str(tmp_path / "blip"), "--to", "hf", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "BlipImageProcessor" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
