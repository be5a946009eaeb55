"""The LLaVA-1.5 chat template ("vicuna_v1"), applied by one function, not hand-built strings.

A conversation is a list of turns, user first and then alternating; each turn is
``{"role": "user" | "assistant", "content": str}`` or LLaVA's JSONL form
``{"from": "human" | "gpt", "value": str}``. The text is::

    [SYSTEM ]USER: <image>\\nWhat is this? ASSISTANT: A cat.</s>USER: And its colour? ASSISTANT: Grey.</s>

(the system prompt and its space only when one is given). A conversation ending with a user turn
ends with ``" ASSISTANT:"``: the prompt a model continues. For training, :class:`ChatText` also
says which characters are the assistant's answers (each with the space before it and the end
token after it, as LLaVA computes its loss on them); :func:`encode_chat` turns that into token ids
and labels, -100 everywhere else (system, user turns, images, role names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100  # the label of positions the loss skips (PyTorch's cross_entropy default)
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)  # LLaVA-1.5's system prompt (conv_vicuna_v1), for those who want it; HF's llava-1.5 template has none
_ROLES = {"user": "USER", "human": "USER", "assistant": "ASSISTANT", "gpt": "ASSISTANT"}


@dataclass(frozen=True)
class ChatText:
    """A conversation as text, and the character spans ``[start, end)`` of the assistant's answers."""

    text: str
    answer_spans: tuple[tuple[int, int], ...]

    def answers(self) -> list[str]:
        return [self.text[a:b] for a, b in self.answer_spans]


def _turn(message: Mapping, index: int) -> tuple[str, str]:
    """(USER | ASSISTANT, text) of one turn in either accepted form."""
    if not isinstance(message, Mapping):
        raise TypeError(f"turn {index}: expected a dict with role/content or from/value, got {type(message).__name__}")
    role = message.get("role", message.get("from"))
    content = message.get("content", message.get("value"))
    if role not in _ROLES:
        raise ValueError(f"turn {index}: role {role!r} is not one of {sorted(_ROLES)}")
    if not isinstance(content, str):
        raise TypeError(f"turn {index}: content must be a string, got {type(content).__name__}")
    return _ROLES[role], content


def _image_first(content: str, image_token: str) -> str:
    """LLaVA's data puts one image anywhere in a turn; its training moves it to the front."""
    if content.count(image_token) != 1 or content.startswith(image_token + "\n"):
        return content
    return image_token + "\n" + content.replace(image_token, "").strip()


def apply_chat_template(
    messages: Sequence[Mapping],
    *,
    system: str | None = None,
    eos_token: str = "</s>",
    image_token: str = IMAGE_TOKEN,
    image_first: bool = True,
) -> ChatText:
    """The LLaVA-1.5 text of ``messages`` (see the module docs) and the assistant's answer spans.

    ``eos_token`` closes every answer (the LLM's end token: ``</s>`` for Llama 2/Vicuna, the
    tokenizer's own for others). ``image_first``: a user turn with one ``image_token`` anywhere
    gets it moved to the front followed by a newline, as LLaVA's training data preparation does.
    """
    if not messages:
        raise ValueError("a conversation needs at least one turn")
    parts: list[str] = [system + " "] if system else []
    spans: list[tuple[int, int]] = []
    length = len(parts[0]) if parts else 0
    for i, message in enumerate(messages):
        role, content = _turn(message, i)
        expected = "USER" if i % 2 == 0 else "ASSISTANT"
        if role != expected:
            raise ValueError(f"turn {i}: expected a {expected.lower()} turn (user first, then alternating)")
        if role == "USER":
            piece = f"USER: {_image_first(content, image_token) if image_first else content} ASSISTANT:"
            parts.append(piece)
            length += len(piece)
        else:
            answer = f" {content}{eos_token}"
            spans.append((length, length + len(answer)))
            parts.append(answer)
            length += len(answer)
    return ChatText("".join(parts), tuple(spans))


def encode_chat(tokenizer, chat: ChatText, *, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of ``chat`` and their labels: the ids inside the answer spans, ``IGNORE_INDEX``
    elsewhere. The text is encoded piece by piece at the span edges (an answer starts with its
    space, so byte-level BPE splits it there anyway); ``add_bos`` puts the tokenizer's start token
    first (labelled -100)."""
    ids: list[int] = []
    labels: list[int] = []
    bos = tokenizer.bos_token_id if add_bos else None
    if bos is not None:
        ids.append(bos)
        labels.append(IGNORE_INDEX)
    pos = 0
    for start, end in chat.answer_spans:
        prompt = tokenizer.encode(chat.text[pos:start]) if start > pos else []
        answer = tokenizer.encode(chat.text[start:end])
        ids += prompt + answer
        labels += [IGNORE_INDEX] * len(prompt) + answer
        pos = end
    rest = tokenizer.encode(chat.text[pos:]) if pos < len(chat.text) else []
    return ids + rest, labels + [IGNORE_INDEX] * len(rest)
