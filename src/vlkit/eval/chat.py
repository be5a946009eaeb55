"""Answering in a conversation with a LLaVA-style VLM: the chat template's prompt, greedy (or
sampled) decoding through ``VLM.generate``, and the answer's text, optionally streamed.

    text = answer(model, tokenizer, pixel_values, [{"from": "human", "value": "<image>\\nwhat shape?"}],
                  on_text=lambda piece: print(piece, end="", flush=True))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..tokenizers.chat import apply_chat_template


def prompt_ids(tokenizer, turns: Sequence[Mapping]) -> list[int]:
    """Ids of a conversation that ends with a user turn: ``[<s>] ... USER: ... ASSISTANT:``."""
    eos = tokenizer.special_tokens.get("eos", "</s>")
    text = apply_chat_template(turns, eos_token=eos).text
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + tokenizer.encode(text)


def answer(
    model,
    tokenizer,
    pixel_values: torch.Tensor | None,
    turns: Sequence[Mapping],
    *,
    max_new_tokens: int | None = 64,
    on_text: Callable[[str], None] | None = None,
    **generation,
) -> str:
    """The model's answer (text, without the end token) to the last user turn of ``turns`` about
    ``pixel_values`` (1, 3, H, W) or no image; ``on_text`` gets the answer's text piece by piece as
    the tokens are chosen (greedy or sampling). ``generation``: more options of ``VLM.generate``
    (``do_sample``, ``generation_config``, ...); ``max_new_tokens=None`` leaves the config's."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, turns)], device=device)
    eos = model.config.text.eos_token_id
    vocab = tokenizer.vocab_size  # a model's vocabulary may be larger: ids the tokenizer lacks are left out
    new: list[int] = []
    shown = ""

    def stream(token: torch.Tensor) -> None:
        nonlocal shown
        if int(token[0]) == eos or int(token[0]) >= vocab:
            return
        new.append(int(token[0]))
        text = tokenizer.decode(new, skip_special_tokens=True)
        if on_text is not None and text.startswith(shown) and len(text) > len(shown):
            on_text(text[len(shown) :])
            shown = text

    if max_new_tokens is not None:
        generation["max_new_tokens"] = max_new_tokens
    if on_text is not None:
        generation["streamer"] = stream
    out = model.generate(None if pixel_values is None else pixel_values.to(device), ids, **generation)
    tokens = [t for t in out[0, ids.shape[1] :].tolist() if t != eos and t < vocab]
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    if on_text is not None and text.startswith(shown) and len(text) > len(shown):
        on_text(text[len(shown) :])
    return text
