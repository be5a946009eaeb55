"""``GenerationConfig``: every decoding option in one validated, frozen object.

The names are transformers' (``max_new_tokens``, ``num_beams``, ``do_sample``, ``top_p``, ...), so
a transformers user's options carry over. Every ``generate``/``answer`` of vlkit takes
``generation_config=None, **overrides``:

    model.generate(ids, max_new_tokens=20, num_beams=4)                 # keyword overrides
    config = GenerationConfig(num_beams=3, min_new_tokens=5, max_new_tokens=20)
    model.generate(pixels, generation_config=config, length_penalty=0.5)  # a config, then overrides

Two defaults differ from transformers': ``top_k=0`` (no top-k filter; transformers samples with
50) and the special tokens ``eos_token_id``/``pad_token_id``, which default to ``"model"``: the
model's own end and padding tokens (GPT's ``eos_token_id``, BLIP's [SEP] and [PAD]). ``None``
means none: ``eos_token_id=None`` never stops early. ``eos_token_id`` may also be a list of ids
(HF checkpoints' generation_config.json often holds one): a row ends at any of them.

``static_cache=True`` decodes on a preallocated KV cache written in place (fixed shapes);
``compile=True`` (which implies it) also compiles the decoding step with ``torch.compile``
(CUDA graphs on a GPU). Both give the tokens of the default dynamic cache; see docs/generation.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

MODEL: Final = "model"  # eos_token_id / pad_token_id: the model's own token
TokenId = int | None | Literal["model"]
EndTokens = int | tuple[int, ...] | None | Literal["model"]  # a list is kept as a tuple


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options, validated once here.

    - ``max_new_tokens``: at most this many tokens after the prompt.
    - ``min_new_tokens``: the end token is forbidden until this many new tokens are written.
    - ``min_length``: the same counted over the whole sequence, prompt included (transformers'
      ``min_length``; BLIP's prompt is [DEC] and the prompt's words).
    - ``num_beams``: 1 is greedy or sampling; more is beam search (with transformers'
      bookkeeping: ``2 * num_beams`` candidates per step, finished hypotheses scored
      ``sum log p / new_length ** length_penalty``; ``length_penalty > 0`` favours longer ones).
    - ``early_stopping``: beam search stops as soon as ``num_beams`` hypotheses are finished;
      False (the default) stops when no running beam can beat the worst finished one.
    - ``do_sample``: sample (with ``num_beams=1``) from the distribution after ``temperature``,
      ``top_k`` (0 or None: off) and nucleus ``top_p`` (1.0 or None: off) filtering, in that order.
    - ``repetition_penalty``: CTRL's penalty on tokens already in the sequence (1.0: off).
    - ``eos_token_id`` / ``pad_token_id``: ``"model"`` (the model's), an id, or None;
      ``eos_token_id`` may be a list of ids (kept as a tuple): a row ends at any of them.
    - ``static_cache``: decode on a preallocated KV cache (fixed shapes, written in place).
    - ``compile``: ``torch.compile`` the decoding step (implies ``static_cache``).
    """

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    min_length: int = 0
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool = False
    eos_token_id: EndTokens = MODEL
    pad_token_id: TokenId = MODEL
    static_cache: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        # transformers' habit: top_k=None / top_p=None for "no filter"
        if self.top_k is None:
            object.__setattr__(self, "top_k", 0)
        if self.top_p is None:
            object.__setattr__(self, "top_p", 1.0)
        for name in ("max_new_tokens", "min_new_tokens", "min_length", "num_beams", "top_k"):
            _check_int(name, getattr(self, name))
        for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
            _check_number(name, getattr(self, name))
        for name in ("do_sample", "early_stopping", "static_cache", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        eos = self.eos_token_id
        if isinstance(eos, Sequence) and not isinstance(eos, str):
            if not eos or not all(_is_int(e) and e >= 0 for e in eos):
                raise ValueError(f"eos_token_id must be a token id >= 0 or a non-empty list of them, got {eos!r}")
            object.__setattr__(self, "eos_token_id", tuple(eos))
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if name == "eos_token_id" and isinstance(value, tuple):
                continue
            if value is not None and value != MODEL and not (_is_int(value) and value >= 0):
                raise ValueError(f"{name} must be a token id >= 0, None or {MODEL!r}, got {value!r}")
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens must be >= 0, got {self.min_new_tokens}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}")
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0, got {self.min_length}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no top-k filter), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1: no nucleus filter), got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1: none), got {self.repetition_penalty}")
        if self.do_sample and self.num_beams > 1:
            raise ValueError(
                f"do_sample=True with num_beams={self.num_beams}: beam search does not sample; "
                "use num_beams=1 to sample"
            )

    def replace(self, **overrides) -> GenerationConfig:
        """A copy with some options changed (validated again); an unknown name is a TypeError."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown generation option(s) {', '.join(unknown)}; expected {', '.join(names)}")
        return dataclasses.replace(self, **overrides) if overrides else self

    def with_model_tokens(self, eos_token_id: int | Sequence[int] | None, pad_token_id: int | None) -> GenerationConfig:
        """The config with ``"model"`` special tokens replaced by the model's ids."""
        return self.replace(
            eos_token_id=eos_token_id if self.eos_token_id == MODEL else self.eos_token_id,
            pad_token_id=pad_token_id if self.pad_token_id == MODEL else self.pad_token_id,
        )


def resolve_generation_config(
    generation_config: GenerationConfig | None,
    overrides: dict,
    *,
    default: GenerationConfig,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int | None,
) -> GenerationConfig:
    """What a model's ``generate(generation_config=None, **overrides)`` decodes with: the given
    config (else the method's ``default``), the keyword overrides on top, the model's special
    tokens where the config says ``"model"``."""
    if generation_config is not None and not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config must be a GenerationConfig, got {type(generation_config).__name__}")
    config = (generation_config or default).replace(**overrides)
    return config.with_model_tokens(eos_token_id, pad_token_id)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value) -> None:
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r}")


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
