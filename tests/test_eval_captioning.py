"""BLIP evaluation from the command line: captioning scores (BLEU, CIDEr-D, exact match) and
retrieval re-ranked by the ITM head (`vlkit eval captioning`, `vlkit eval retrieval --rerank itm`),
checked against direct computation, on the built-in shapes and on a user's folder."""

import json

import pytest
import torch

import vlkit
from vlkit.cli import main
from vlkit.data.synthetic import ShapesDataset
from vlkit.eval.caption_metrics import caption_scores
from vlkit.eval.captioning import captioning_scores, decode_generated, generate_captions
from vlkit.eval.rerank import itm_rerank_scores, reranked_recall
from vlkit.eval.retrieval import recall_at_k, similarity_matrix, unique_captions
from vlkit.models.blip import BlipTextConfig
from vlkit.train.recipes import BLIPVQARecipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes", init_std=0.5)
    pair = recipe.build_model().eval()
    folder = pair.save_pretrained(tmp_path_factory.mktemp("blip") / "model")
    return recipe, pair.captioner, folder


def test_decode_generated():
    tok = vlkit.data.synthetic.shapes_tokenizer()
    t = BlipTextConfig(vocab_size=50, bos_token_id=48, enc_token_id=49, sep_token_id=3, pad_token_id=0)
    words = tok(["a photo of a red star"])["input_ids"][0].tolist()  # [CLS] a photo of a red star [SEP]
    row = [48] + words[1:-1] + [3, 0, 0]
    assert decode_generated(tok, row, t) == "a photo of a red star"
    assert decode_generated(tok, torch.tensor(row), t, skip=4) == "a red star"  # [DEC] + "a photo of"
    assert decode_generated(tok, [48, 49, words[5], 3, words[6]], t) == "red"  # stops at [SEP], drops [ENC]


def test_captioning_scores():
    caps = ["a red circle", "A Blue star.", "a green cross"]
    refs = [["a red circle", "a circle"], ["a blue star"], ["a large green cross on the left"]]
    s = captioning_scores(caps, refs)
    assert s["exact_match"] == pytest.approx(200 / 3)  # punctuation and case are tokenized away
    ref = caption_scores(["a red circle", "a blue star", "a green cross"], refs)
    for k, v in ref.items():
        assert s[k] == pytest.approx(v)
    with pytest.raises(ValueError, match="3 captions but 2"):
        captioning_scores(caps, refs[:2])


def test_generate_captions_strips_the_prompt(saved):
    recipe, cap, _ = saved
    tok = recipe.tokenizer
    ds = ShapesDataset("validation", 6, image_size=32, transform=vlkit.image_transform(cap))
    pixels = torch.stack([ds[i]["pixel_values"] for i in range(6)])
    got = generate_captions(cap, tok, [pixels[:4], pixels[4:]], prompt="a photo of", max_new_tokens=6)
    ids = cap.generate(pixels, tok(["a photo of"])["input_ids"], max_new_tokens=6)
    assert got == [decode_generated(tok, row, cap.config.text, skip=4) for row in ids]
    plain = generate_captions(cap, tok, [pixels], max_new_tokens=6, num_beams=2)
    assert plain == [
        decode_generated(tok, row, cap.config.text) for row in cap.generate(pixels, max_new_tokens=6, num_beams=2)
    ]


def test_cli_captioning_on_shapes_and_a_folder(saved, tmp_path, capsys):
    recipe, cap, folder = saved
    out = tmp_path / "c.json"
    assert (
        main(
            [
                "eval",
                "captioning",
                "--model",
                str(folder),
                "--size",
                "12",
                "--num-beams",
                "1",
                "--min-length",
                "0",
                "--max-new-tokens",
                "8",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    ds = ShapesDataset("validation", 12, image_size=32, transform=vlkit.image_transform(cap), captions="full")
    pixels = torch.stack([ds[i]["pixel_values"] for i in range(12)])
    caps = generate_captions(cap, recipe.tokenizer, [pixels], max_new_tokens=8)
    expected = captioning_scores(caps, [[ds.caption(i)] for i in range(12)])
    assert m["images"] == 12 and set(expected) <= set(m)
    for k, v in expected.items():
        assert m[k] == pytest.approx(v)
    assert "reference:" in capsys.readouterr().out

    # a folder: rows with the same image are its references; a missing image is reported
    (tmp_path / "img").mkdir()
    ds = ShapesDataset("validation", 3, image_size=32)
    lines = ["image,caption"]
    for i in range(3):
        ds.image(i).save(tmp_path / "img" / f"{i}.png")
        lines += [f"img/{i}.png,{ds.caption(i)}", f"img/{i}.png,a shape"]
    lines.append("img/gone.png,a red circle")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    assert (
        main(
            [
                "eval",
                "captioning",
                "--model",
                str(folder),
                "--annotations",
                str(tmp_path / "pairs.csv"),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["images"] == 3
    assert "missing file" in capsys.readouterr().out


def test_itm_rerank_scores_and_recall(saved):
    recipe, cap, _ = saved
    tok = recipe.tokenizer
    ds = ShapesDataset("validation", 16, seed=1, image_size=32, transform=vlkit.image_transform(cap), captions="full")
    pixels = torch.stack([ds[i]["pixel_values"] for i in range(16)])
    texts, positives = unique_captions([ds.caption(i) for i in range(16)])
    t = tok(texts, padding="longest")
    sim = similarity_matrix(cap.encode_image(pixels), cap.encode_text(t["input_ids"], t["attention_mask"]))
    i2t, t2i = itm_rerank_scores(cap, tok, pixels, texts, sim, k=3, batch_size=7)
    # brute force: the ITM matched logit ([ENC] first) + ITC for the top 3, ITC - 1e4 behind them
    ids = t["input_ids"].clone()
    ids[:, 0] = cap.config.text.enc_token_id
    itm = torch.stack(
        [
            cap.itm_logits(pixels[i : i + 1].expand(len(texts), -1, -1, -1), ids, t["attention_mask"])[:, 1]
            for i in range(16)
        ]
    )  # (16, N_txt)
    for q in range(16):
        top = sim[q].topk(3).indices
        for j in range(len(texts)):
            want = (itm[q, j] + sim[q, j]) if j in top else sim[q, j] - 1e4
            assert i2t[q, j].item() == pytest.approx(want.item(), abs=1e-3)
    for q in range(len(texts)):
        top = sim[:, q].topk(3).indices
        for i in range(16):
            want = (itm[i, q] + sim[i, q]) if i in top else sim[i, q] - 1e4
            assert t2i[q, i].item() == pytest.approx(want.item(), abs=1e-3)
    r = reranked_recall(i2t, t2i, positives)
    assert r["i2t_R@1"] == recall_at_k(i2t, positives)["i2t_R@1"]
    assert r["t2i_R@5"] == recall_at_k(t2i.t(), positives)["t2i_R@5"]
    # beyond the shortlist the order is ITC's: R@10 with k = 3 equals ITC's R@10 when ITC finds it in the top 3 only
    with pytest.raises(ValueError, match="transpose"):
        reranked_recall(i2t, t2i[:, :3], positives)


def test_cli_retrieval_with_and_without_itm(saved, tmp_path, capsys):
    recipe, cap, folder = saved
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "eval",
                "retrieval",
                "--model",
                str(folder),
                "--size",
                "20",
                "--rerank",
                "itm",
                "--rerank-k",
                "4",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads(out.read_text())
    assert "re-ranked by itm" in capsys.readouterr().out
    ds = ShapesDataset("validation", 20, image_size=32, transform=vlkit.image_transform(cap), captions="full")
    pixels = torch.stack([ds[i]["pixel_values"] for i in range(20)])
    texts, positives = unique_captions([ds.caption(i) for i in range(20)])
    t = recipe.tokenizer(texts, padding="longest")
    sim = similarity_matrix(cap.encode_image(pixels), cap.encode_text(t["input_ids"], t["attention_mask"]))
    itc = recall_at_k(sim, positives)
    reranked = reranked_recall(*itm_rerank_scores(cap, recipe.tokenizer, pixels, texts, sim, k=4), positives)
    for k, v in itc.items():
        assert m[f"itc_{k}"] == pytest.approx(v)
    for k, v in reranked.items():
        assert m[k] == pytest.approx(v)
    # without re-ranking the keys are the plain ones; a CLIP model cannot be re-ranked by ITM
    assert main(["eval", "retrieval", "--model", str(folder), "--size", "20", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["i2t_R@1"] == pytest.approx(itc["i2t_R@1"])
    clip = tmp_path / "clip"
    vlkit.create_model("clip-tiny").save_pretrained(clip)
    assert main(["eval", "retrieval", "--model", str(clip), "--size", "8", "--rerank", "itm"]) == 2
    assert "image-text matching head" in capsys.readouterr().err
