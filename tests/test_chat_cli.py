"""``vlkit chat``: --prompt answers once; a scripted session keeps the conversation, takes /image,
/reset and /quit, and reports a bad line in one error line without ending."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

import vlkit
from vlkit.cli import main
from vlkit.data.conversations import conversation_tokenizer
from vlkit.eval.chat import answer


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    torch.manual_seed(0)
    model = vlkit.create_model("vlm-shapes-tiny")
    model.save_pretrained(tmp / "vlm", tokenizer=conversation_tokenizer())
    Image.new("RGB", (40, 40), "red").save(tmp / "red.png")
    Image.new("RGB", (40, 40), "blue").save(tmp / "blue.png")
    return tmp


def _expected(folder, turns, images):
    model = vlkit.from_pretrained(folder / "vlm").eval()
    from vlkit.cli.caption import read_images

    pixels = read_images([folder / p for p in images], model) if images else None
    return answer(model, conversation_tokenizer(), pixels, turns, max_new_tokens=6)


def test_prompt_answers_once(folder, capsys):
    args = ["chat", "--model", str(folder / "vlm"), str(folder / "red.png"), "--prompt", "what shape is it?"]
    assert main([*args, "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    expected = _expected(folder, [{"from": "human", "value": "<image>\nwhat shape is it?"}], ["red.png"])
    assert out == expected + "\n" and expected  # streamed pieces add up to the answer


def test_scripted_session(folder, capsys, monkeypatch):
    script = "what colour ?\nand its size ?\n/image " + str(folder / "nope.png") + "\n/bogus\n"
    script += f"/image {folder / 'blue.png'}\nwhich is blue ?\n/reset\nhello\n/quit\nnever read\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    args = ["chat", "--model", str(folder / "vlm"), str(folder / "red.png"), "--max-new-tokens", "6"]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    first = [{"from": "human", "value": "<image>\nwhat colour ?"}]
    a1 = _expected(folder, first, ["red.png"])
    second = [*first, {"from": "gpt", "value": a1.strip()}, {"from": "human", "value": "and its size ?"}]
    a2 = _expected(folder, second, ["red.png"])
    third = [*second, {"from": "gpt", "value": a2.strip()}, {"from": "human", "value": "<image>\nwhich is blue ?"}]
    a3 = _expected(folder, third, ["red.png", "blue.png"])
    a4 = _expected(folder, [{"from": "human", "value": "hello"}], [])
    assert lines == [a1, a2, f"(image {folder / 'blue.png'} added)", a3, "(new conversation)", a4]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("vlkit chat: error: ") for e in errors)
    assert "nope.png" in errors[0] and "unknown command '/bogus'" in errors[1]


def test_errors_are_one_line(folder, tmp_path, capsys):
    assert main(["chat", "--model", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    assert main(["chat", "--model", str(folder / "vlm"), str(tmp_path / "none.png"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("vlkit chat: error: ") for e in err)


def test_vqa_and_caption_accept_a_vlm(folder, capsys):
    model = str(folder / "vlm")
    image = str(folder / "red.png")
    assert main(["vqa", "--model", model, image, "what shape is it?", "--num-beams", "1", "--max-new-tokens", "6"]) == 0
    expected = _expected(folder, [{"from": "human", "value": "<image>\nwhat shape is it?"}], ["red.png"])
    assert capsys.readouterr().out == expected.strip() + "\n"
    assert main(["caption", "--model", model, image, "--num-beams", "2", "--max-new-tokens", "6"]) == 0
    path, text = capsys.readouterr().out.rstrip("\n").split("\t")
    assert path == image
    (folder / "answers.txt").write_text("red\nblue\n")
    assert main(["vqa", "--model", model, image, "what?", "--answers", str(folder / "answers.txt")]) == 2
    assert "for BLIP VQA models" in capsys.readouterr().err
