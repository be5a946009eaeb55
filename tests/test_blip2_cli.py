"""``vlkit caption`` / ``vlkit vqa`` / ``vlkit eval`` with a BLIP-2: a tiny saved model whose LLM and
Q-Former read the built-in shapes' tokenizer, a real photo; the printed text is what
``model.generate`` gives."""

import json

import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

import vlkit
from vlkit.cli import main
from vlkit.data.synthetic import shapes_tokenizer
from vlkit.eval.retrieval import similarity_matrix


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(skimage_data.chelsea()).save(path)
    return str(path)


@pytest.fixture(scope="module")
def blip2(tmp_path_factory):
    tok = shapes_tokenizer()
    llm = dict(vocab_size=tok.vocab_size, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    model = vlkit.create_model("blip2-tiny", llm=llm, qformer={"vocab_size": tok.vocab_size}).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # make the image matter to the random LLM
    return model, tok, str(model.save_pretrained(tmp_path_factory.mktemp("blip2"), tokenizer=tok))


def _expected(model, tok, photo, text, **options):
    pixels = vlkit.image_transform(model)(Image.open(photo))[None]
    prompt = torch.tensor([[model.config.llm.bos_token_id, *tok.encode(text)]])
    ids = model.generate(pixels, prompt, **options)[0]
    special = {model.config.llm.bos_token_id, model.config.llm.eos_token_id}
    return ids, prompt.shape[1], special


def test_caption_with_a_prompt(blip2, photo, capsys):
    model, tok, folder = blip2
    args = ["caption", "--model", folder, photo, "--prompt", "a red", "--max-new-tokens", "4", "--num-beams", "2"]
    assert main(args) == 0
    path, caption = capsys.readouterr().out.strip("\n").split("\t")
    ids, _, special = _expected(model, tok, photo, "a red", max_new_tokens=4, num_beams=2, min_length=5)
    assert path == photo and caption.startswith("a red")
    assert caption == tok.decode([i for i in ids.tolist() if i not in special], skip_special_tokens=True).strip()


def test_vqa_prompts_the_llm_with_the_question(blip2, photo, capsys):
    model, tok, folder = blip2
    assert main(["vqa", "--model", folder, photo, "what color", "--max-new-tokens", "3", "--num-beams", "1"]) == 0
    answer = capsys.readouterr().out.strip()
    ids, n, special = _expected(model, tok, photo, "Question: what color Answer:", max_new_tokens=3, min_length=1)
    assert answer == tok.decode([i for i in ids[n:].tolist() if i not in special], skip_special_tokens=True).strip()
    assert main(["vqa", "--model", folder, photo, "what color", "--prompt", "no slot"]) == 2
    assert "--prompt must hold {}" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["captioning", "vqa", "retrieval"])
def test_eval_runs_a_blip2(blip2, kind, tmp_path):
    _, _, folder = blip2
    out = tmp_path / "metrics.json"
    args = ["eval", kind, "--model", folder, "--size", "6", "--batch-size", "4", "--json", str(out)]
    if kind != "retrieval":
        args += ["--max-new-tokens", "3", "--num-beams", "1"]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    key = {"captioning": "cider", "vqa": "vqa_accuracy", "retrieval": "i2t_R@1"}[kind]
    assert key in metrics and all(0 <= v <= 100 for k, v in metrics.items() if k not in ("cider", "images", "texts"))


def test_similarity_of_per_query_image_features_is_the_best_query():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(3, 4, 8, generator=g), torch.randn(5, 8, generator=g)
    expected = torch.tensor(
        [
            [max(torch.cosine_similarity(image[i, q], text[t], dim=0) for q in range(4)) for t in range(5)]
            for i in range(3)
        ]
    )
    assert torch.allclose(similarity_matrix(image, text), expected, atol=1e-6)


def test_convert_to_hf(blip2, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    _, _, folder = blip2
    assert main(["convert", folder, "--to", "hf", str(tmp_path / "refused")]) == 2  # no image placeholder id
    assert "image_token_id" in capsys.readouterr().err
    model = vlkit.create_model("blip2-tiny", image_token_id=999)
    source = model.save_pretrained(tmp_path / "vlkit")
    assert main(["convert", str(source), "--to", "hf", str(tmp_path / "hf")]) == 0
    ref = transformers.Blip2ForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert torch.equal(ref.query_tokens, model.qformer.query_tokens)
    assert transformers.Blip2ForImageTextRetrieval.from_pretrained(tmp_path / "hf" / "retrieval").itm_head is not None
