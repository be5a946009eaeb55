"""Decoding on a KV cache, for every decoder: greedy, sampling (temperature, top-k, top-p) and
beam search, driven by one step protocol.

A *step function* ``step(new_ids) -> logits`` takes the tokens the model has not seen yet ((N, t)
ids), runs them on the model's cache and returns the next-token logits of the last position
(N, V); ``step.reorder(index)`` keeps the cache rows ``index`` (beam search). :class:`CachedStep`
is that step for every vlkit decoder (GPT, BLIP's text decoder): the model supplies one function
``forward(new_ids, *, attention_mask, position_ids, cache, **rows) -> (N, V) logits`` and
:class:`CachedStep` keeps the cache, the padding mask, the positions and the per-row tensors
(``rows``: e.g. the image a decoder cross-attends to) in step with the beams.

The cache is dynamic (:class:`~vlkit.layers.KVCache`, grown by concatenation) or, with the
config's ``static_cache``, preallocated (:class:`~vlkit.layers.StaticKVCache`: written in place,
fixed shapes); ``compile`` also runs every decoding step after the prompt through
``torch.compile`` (fullgraph, static shapes; mode "reduce-overhead", i.e. CUDA graphs, on a GPU).
The prompt itself always runs eagerly. :func:`decoding_step` picks them from the config: the
one place every model gets its step from.

:func:`generate_tokens` is the one entry point the models call. The numerics follow
transformers' ``generate`` (same logits processing order, same beam bookkeeping), so equal
models give equal tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from ..layers import KVCache, StaticKVCache
from .generation_config import GenerationConfig


class StepFunction(Protocol):
    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


class CachedStep:
    """The step function of a decoder with a :class:`~vlkit.layers.KVCache`.

    ``attention_mask`` (N, T_prompt), 1 for real tokens, is for left-padded prompts: it grows by
    one column per step and gives the positions (real tokens counted from 0). ``rows`` are
    per-row tensors handed to ``forward`` at every step (None allowed) and ``first`` those handed
    at the first step only (the prompt's embeddings); both are reordered with the beams, e.g.
    ``context=image_embeds, context_mask=None``.

    With a :class:`~vlkit.layers.StaticKVCache` the steps after the prompt see fixed shapes: the
    padding mask and the positions cover the cache's whole capacity (built once, after the
    prompt), the cache's ``slots`` say where the step writes, and ``compile=True`` runs those
    steps through ``torch.compile``.
    """

    def __init__(
        self,
        forward: Callable[..., torch.Tensor],
        cache: KVCache,
        *,
        attention_mask: torch.Tensor | None = None,
        first: dict[str, torch.Tensor | None] | None = None,
        compile: bool = False,
        **rows: torch.Tensor | None,
    ):
        if compile and not isinstance(cache, StaticKVCache):
            raise ValueError("a compiled decoding step needs a StaticKVCache (fixed shapes)")
        self.forward, self.cache = forward, cache
        self.attention_mask = attention_mask
        self.first = dict(first or {})
        self.rows = rows
        self.compile = compile
        self._compiled: Callable[..., torch.Tensor] | None = None
        self._static_mask: torch.Tensor | None = None  # (N, capacity) bool, after the prompt
        self._positions: torch.Tensor | None = None  # (N, capacity) position of every slot

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        past = self.cache.length
        if past and isinstance(self.cache, StaticKVCache):
            return self._static_step(new_ids, past)
        position_ids = None
        if self.attention_mask is not None:
            if past:  # the new tokens are real
                ones = self.attention_mask.new_ones(new_ids.shape[0], new_ids.shape[1])
                self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)  # (N, past + t)
            position_ids = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (N, t)
        rows = self.rows if past else {**self.rows, **self.first}
        return self.forward(
            new_ids, attention_mask=self.attention_mask, position_ids=position_ids, cache=self.cache, **rows
        )  # (N, V)

    def _static_step(self, new_ids: torch.Tensor, past: int) -> torch.Tensor:
        """A step after the prompt on a static cache: fixed shapes, the slots as a tensor."""
        cache = self.cache
        assert isinstance(cache, StaticKVCache)
        if self._static_mask is None:  # the prompt filled `past` positions: the mask over the capacity
            mask = torch.ones(new_ids.shape[0], cache.capacity, dtype=torch.bool, device=new_ids.device)
            if self.attention_mask is not None:
                mask[:, :past] = self.attention_mask.bool()
            self._static_mask = mask  # (N, S); the new tokens are real, unwritten slots are hidden by causality
            self._positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, S)
        assert self._positions is not None
        t = new_ids.shape[1]
        cache.slots = torch.arange(past, past + t, device=new_ids.device)  # (t,)
        position_ids = self._positions.index_select(1, cache.slots)  # (N, t)
        forward = self._compiled_forward(new_ids) if self.compile else self.forward
        try:
            logits = forward(
                new_ids, attention_mask=self._static_mask, position_ids=position_ids, cache=cache, **self.rows
            )  # (N, V)
        finally:
            cache.slots = None
        cache.advance(t)
        return logits.clone() if self.compile and logits.is_cuda else logits  # CUDA graphs reuse their output

    def _compiled_forward(self, new_ids: torch.Tensor) -> Callable[..., torch.Tensor]:
        if self._compiled is None:
            mode = "reduce-overhead" if new_ids.is_cuda else None  # CUDA graphs on a GPU
            self._compiled = torch.compile(self.forward, fullgraph=True, dynamic=False, mode=mode)
        if new_ids.is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        return self._compiled

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows ``index`` (N',) of the cache, the mask and the row tensors; before the first
        step this expands a batch, e.g. every prompt ``num_beams`` times."""
        self.cache.reorder(index)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, index)

        self.attention_mask = pick(self.attention_mask)
        self._static_mask, self._positions = pick(self._static_mask), pick(self._positions)
        self.rows = {k: pick(v) for k, v in self.rows.items()}
        self.first = {k: pick(v) for k, v in self.first.items()}


def decoding_step(
    forward: Callable[..., torch.Tensor],
    num_layers: int,
    config: GenerationConfig,
    *,
    attention_mask: torch.Tensor | None = None,
    first: dict[str, torch.Tensor | None] | None = None,
    **rows: torch.Tensor | None,
) -> CachedStep:
    """The :class:`CachedStep` of a decoder of ``num_layers`` blocks for ``config``: a dynamic
    KV cache, or a static one (``static_cache``) with the steps compiled (``compile``)."""
    if config.static_cache or config.compile:
        cache: KVCache = StaticKVCache(num_layers, config.max_new_tokens)
    else:
        cache = KVCache(num_layers)
    return CachedStep(forward, cache, attention_mask=attention_mask, first=first, compile=config.compile, **rows)


def _special_tokens(config: GenerationConfig) -> tuple[tuple[int, ...] | None, int | None]:
    """(end tokens, pad) of a config whose special tokens are ids or None."""
    eos, pad = config.eos_token_id, config.pad_token_id
    if isinstance(eos, str) or isinstance(pad, str):
        raise ValueError(
            f"decoding needs the model's eos/pad ids, got {eos!r}/{pad!r}: call config.with_model_tokens(eos, pad)"
        )
    return (None if eos is None else (eos,) if isinstance(eos, int) else tuple(eos)), pad


def _is_end(tokens: torch.Tensor, eos: tuple[int, ...]) -> torch.Tensor:
    """tokens (...) -> bool (...): which are one of the end tokens."""
    if len(eos) == 1:
        return tokens == eos[0]
    return torch.isin(tokens, torch.tensor(eos, device=tokens.device))


def _process(scores: torch.Tensor, ids: torch.Tensor, config: GenerationConfig, prompt_len: int) -> torch.Tensor:
    """Repetition penalty (CTRL), then minimum length and minimum new tokens, in transformers'
    order. scores: (N, V); ids (N, L): the sequences so far, prompt included."""
    if config.repetition_penalty != 1.0:
        seen = torch.gather(scores, 1, ids)
        seen = torch.where(seen < 0, seen * config.repetition_penalty, seen / config.repetition_penalty)
        scores = scores.scatter(1, ids, seen)
    eos, length = _special_tokens(config)[0], ids.shape[1]
    if eos is not None and (length < config.min_length or length - prompt_len < config.min_new_tokens):
        scores = scores.clone()
        scores[:, list(eos)] = -float("inf")
    return scores


def _warp(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k (0: off), then nucleus top-p (1.0: off) filtering of logits (N, V)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k > 0:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[:, -1] = False  # always keep the most likely token
        scores = scores.masked_fill(remove.scatter(1, order, remove), -float("inf"))
    return scores


@torch.no_grad()
def generate_tokens(
    step: StepFunction,
    input_ids: torch.Tensor,
    config: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    max_positions: int | None = None,
) -> torch.Tensor:
    """Decode ``input_ids`` (B, T) -> (B, T + new), the prompt first: greedy, sampled
    (``do_sample``) or beam search (``num_beams > 1``), as ``config`` says. ``step`` holds the
    batch of ``input_ids`` on an empty cache; beam search expands it (``step.reorder``).
    ``config``'s special tokens must be ids or None (see ``GenerationConfig.with_model_tokens``)."""
    _special_tokens(config)
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty (B, T) tensor, got shape {tuple(input_ids.shape)}")
    if max_positions is not None and input_ids.shape[1] + config.max_new_tokens > max_positions:
        raise ValueError(
            f"{input_ids.shape[1]} prompt + {config.max_new_tokens} new tokens exceed the "
            f"{max_positions} positions of the model"
        )
    if config.num_beams == 1:
        return decode(step, input_ids, config, generator=generator)
    B, nb = input_ids.shape[0], config.num_beams
    step.reorder(torch.arange(B, device=input_ids.device).repeat_interleave(nb))  # every prompt nb times
    return beam_search(step, input_ids.repeat_interleave(nb, dim=0), config)


@torch.no_grad()
def decode(
    step: StepFunction, input_ids: torch.Tensor, config: GenerationConfig, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Greedy (default) or sampled decoding. input_ids (N, T) -> (N, T + new) with the prompt first.

    Rows that produced an end token (``eos_token_id``: one id or several) are continued with
    ``pad_token_id`` (the first end token when None) and decoding stops early once every row is
    finished.
    """
    eos, pad = _special_tokens(config)
    prompt_len = input_ids.shape[1]
    ids = input_ids
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new_ids = ids
    for _ in range(config.max_new_tokens):
        logits = step(new_ids).float()  # (N, V)
        scores = _process(logits, ids, config, prompt_len)
        if config.do_sample:
            probs = _warp(scores, config.temperature, config.top_k, config.top_p).softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
        else:
            next_ids = scores.argmax(dim=-1)  # (N,)
        if eos is not None:
            fill = pad if pad is not None else eos[0]
            next_ids = torch.where(finished, torch.full_like(next_ids, fill), next_ids)
            finished |= _is_end(next_ids, eos)
        new_ids = next_ids[:, None]
        ids = torch.cat([ids, new_ids], dim=1)
        if eos is not None and bool(finished.all()):
            break
    return ids


@torch.no_grad()
def beam_search(step: StepFunction, input_ids: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Beam search. ``input_ids`` (B * num_beams, T) holds each prompt repeated ``num_beams``
    times (the step function's cache is built for that batch). Returns the best hypothesis of
    each prompt, (B, T + new), padded with ``pad_token_id`` (eos when None).

    Finished hypotheses are scored ``sum log p / new_length ** length_penalty``; like
    transformers, ``2 * num_beams`` candidates are kept per step so that ``num_beams`` beams stay
    alive when some end, and the search stops when no running beam can beat the worst finished
    one at the current length (``early_stopping=True``: as soon as ``num_beams`` are finished).
    """
    num_beams, length_penalty = config.num_beams, config.length_penalty
    eos, pad = _special_tokens(config)
    N, prompt_len = input_ids.shape
    if N % num_beams:
        raise ValueError(f"batch of {N} rows is not a multiple of num_beams={num_beams}")
    B, device = N // num_beams, input_ids.device
    max_len = prompt_len + config.max_new_tokens
    fill = pad if pad is not None else (eos[0] if eos is not None else -1)
    keep = 2 * num_beams

    running = torch.full((B, num_beams, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = input_ids.view(B, num_beams, prompt_len)
    running_scores = torch.zeros(B, num_beams, device=device)
    running_scores[:, 1:] = -1e9  # only the first copy of each prompt starts a beam
    done = running.clone()  # finished hypotheses (B, nb, L)
    done_scores = torch.full((B, num_beams), -1e9, device=device)
    done_lens = torch.full((B, num_beams), prompt_len, dtype=torch.long, device=device)
    is_done = torch.zeros(B, num_beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device)[:, None] * num_beams  # (B, 1)

    new_ids = input_ids
    for cur in range(prompt_len, max_len):
        logits = step(new_ids).float()  # (B * nb, V)
        log_probs = _process(F.log_softmax(logits, dim=-1), running[:, :, :cur].reshape(N, cur), config, prompt_len)
        V = log_probs.shape[-1]
        total = (log_probs.view(B, num_beams, V) + running_scores[:, :, None]).view(B, num_beams * V)
        top_scores, top_idx = torch.topk(total, keep, dim=1)  # (B, 2nb)
        src_beam, token = top_idx // V, top_idx % V
        cand = running.gather(1, src_beam[:, :, None].expand(-1, -1, max_len)).clone()  # (B, 2nb, L)
        cand[:, :, cur] = token
        ends = torch.zeros_like(token, dtype=torch.bool) if eos is None else _is_end(token, eos)
        ends = ends | (cur + 1 >= max_len)

        # the best num_beams candidates that did not end continue
        alive_scores = top_scores + ends.float() * -1e9
        nxt = torch.topk(alive_scores, num_beams, dim=1).indices  # (B, nb)
        running = cand.gather(1, nxt[:, :, None].expand(-1, -1, max_len))
        running_scores = alive_scores.gather(1, nxt)
        reorder = (src_beam.gather(1, nxt) + batch_offset).view(-1)

        # candidates among the top num_beams that ended join the finished ones
        gen_len = cur + 1 - prompt_len
        final = top_scores / gen_len**length_penalty
        full = is_done.all(dim=1, keepdim=True) if config.early_stopping else torch.zeros_like(can_improve)
        just_done = ends.clone()
        just_done[:, num_beams:] = False
        final = final + (full | ~can_improve).float() * -1e9 + (~just_done).float() * -1e9
        merged = torch.cat([done, cand], dim=1)
        merged_scores = torch.cat([done_scores, final], dim=1)
        merged_lens = torch.cat([done_lens, torch.full_like(token, cur + 1)], dim=1)
        merged_done = torch.cat([is_done, just_done], dim=1)
        best = torch.topk(merged_scores, num_beams, dim=1).indices
        done = merged.gather(1, best[:, :, None].expand(-1, -1, max_len))
        done_scores = merged_scores.gather(1, best)
        done_lens = merged_lens.gather(1, best)
        is_done = merged_done.gather(1, best)

        # stop when no running beam can still beat the worst finished one
        best_running = running_scores[:, :1] / gen_len**length_penalty
        worst = done_scores.min(dim=1, keepdim=True).values  # (B, 1)
        worst_done = torch.where(is_done, worst, torch.full_like(done_scores, -1e9))
        can_improve = can_improve & (best_running > worst_done).any(dim=-1, keepdim=True)
        if bool(ends.all()) or not bool(can_improve.any()) or (config.early_stopping and bool(is_done.all())):
            break
        step.reorder(reorder)
        new_ids = running[:, :, cur : cur + 1].reshape(N, 1)
    out_len = int(done_lens[:, 0].max())
    return done[:, 0, :out_len]
