"""The LLaVA-1.5 chat template: known texts, answer spans, labels."""

from __future__ import annotations

import pytest

from vlkit.tokenizers import BPETokenizer, apply_chat_template, encode_chat
from vlkit.tokenizers.chat import IGNORE_INDEX, LLAVA_SYSTEM

TURNS = [
    {"role": "user", "content": "<image>\nWhat shape is it?"},
    {"role": "assistant", "content": "A red circle."},
    {"role": "user", "content": "Where is it?"},
    {"role": "assistant", "content": "On the left."},
]


def test_multi_turn_text_and_answer_spans():
    chat = apply_chat_template(TURNS)
    assert chat.text == (
        "USER: <image>\nWhat shape is it? ASSISTANT: A red circle.</s>USER: Where is it? ASSISTANT: On the left.</s>"
    )
    assert chat.answers() == [" A red circle.</s>", " On the left.</s>"]
    assert chat.answer_spans == ((42, 60), (89, 106))  # len("USER: <image>\nWhat shape is it? ASSISTANT:") == 42


def test_generation_prompt_system_prompt_and_llava_jsonl_turns():
    # HF llava-1.5's processor template for one question: "USER: <image>\n... ASSISTANT:"
    prompt = apply_chat_template([{"from": "human", "value": "Describe it.\n<image>"}])
    assert prompt.text == "USER: <image>\nDescribe it. ASSISTANT:" and prompt.answer_spans == ()
    with_system = apply_chat_template(TURNS[:2], system=LLAVA_SYSTEM, eos_token="<|endoftext|>")
    assert with_system.text == (
        LLAVA_SYSTEM + " USER: <image>\nWhat shape is it? ASSISTANT: A red circle.<|endoftext|>"
    )
    assert with_system.answers() == [" A red circle.<|endoftext|>"]
    two = apply_chat_template([{"role": "user", "content": "<image> and <image>?"}])
    assert two.text == "USER: <image> and <image>? ASSISTANT:"  # several images stay where they are


@pytest.mark.parametrize(
    ("turns", "error", "match"),
    [
        ([], ValueError, "at least one turn"),
        ([TURNS[1]], ValueError, "turn 0: expected a user turn"),
        ([TURNS[0], TURNS[0]], ValueError, "turn 1: expected a assistant"),
        ([{"role": "system", "content": "x"}], ValueError, "role 'system'"),
        ([{"role": "user", "content": 3}], TypeError, "content must be a string"),
    ],
)
def test_bad_conversations_are_refused(turns, error, match):
    with pytest.raises(error, match=match):
        apply_chat_template(turns)


def test_labels_cover_exactly_the_answers():
    corpus = [apply_chat_template(TURNS).text] * 3 + ["a red circle on the left"]
    tok = BPETokenizer.train(
        corpus, 320, special_tokens={"bos": "<s>", "eos": "</s>"}, extra_special_tokens=["<image>"]
    )
    chat = apply_chat_template(TURNS)
    ids, labels = encode_chat(tok, chat)
    assert ids[0] == tok.bos_token_id and ids[1:] == tok.encode(chat.text)  # pieces split where BPE splits anyway
    kept = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tok.decode(kept) == "".join(chat.answers())
    image = tok.token_to_id("<image>")
    assert labels[ids.index(image)] == IGNORE_INDEX and labels[-1] == tok.eos_token_id
