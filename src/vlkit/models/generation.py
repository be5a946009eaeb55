"""Decoding on a KV cache: greedy, sampling (temperature, top-k, top-p) and beam search.

Every strategy drives a *step function*: ``step(new_ids) -> logits`` takes the tokens not yet
seen by the model ((N, t) ids), runs them on the model's cache and returns the next-token logits
of the last position (N, V). Beam search also calls ``step.reorder(index)`` to keep the cache
rows of the surviving beams. The numerics follow transformers' ``generate`` (same logits
processing order, same beam bookkeeping), so equal models give equal tokens.
"""
from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class StepFunction(Protocol):
    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor: ...

    def reorder(self, index: torch.Tensor) -> None: ...


def _process(
    scores: torch.Tensor,
    ids: torch.Tensor,
    *,
    eos_token_id: int | None,
    min_length: int,
    repetition_penalty: float,
) -> torch.Tensor:
    """Repetition penalty (CTRL) and minimum length, in transformers' order. scores: (N, V)."""
    if repetition_penalty != 1.0:
        seen = torch.gather(scores, 1, ids)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        scores = scores.scatter(1, ids, seen)
    if eos_token_id is not None and ids.shape[1] < min_length:
        scores = scores.clone()
        scores[:, eos_token_id] = -float("inf")
    return scores


def _warp(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of logits (N, V)."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None and top_k > 0:
        k = min(top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - top_p)
        remove[:, -1] = False  # always keep the most likely token
        scores = scores.masked_fill(remove.scatter(1, order, remove), -float("inf"))
    return scores


@torch.no_grad()
def decode(
    step: StepFunction,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_length: int = 0,
    repetition_penalty: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy (default) or sampled decoding. input_ids (N, T) -> (N, T + new) with the prompt first.

    Rows that produced ``eos_token_id`` are continued with ``pad_token_id`` (eos when None) and
    decoding stops early once every row is finished.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    pad = pad_token_id if pad_token_id is not None else eos_token_id
    ids = input_ids
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    new_ids = ids
    for _ in range(max_new_tokens):
        logits = step(new_ids).float()  # (N, V)
        scores = _process(logits, ids, eos_token_id=eos_token_id, min_length=min_length,
                          repetition_penalty=repetition_penalty)
        if do_sample:
            probs = _warp(scores, temperature, top_k, top_p).softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_ids = scores.argmax(dim=-1)
        if eos_token_id is not None:
            next_ids = torch.where(finished, torch.full_like(next_ids, pad), next_ids)
            finished |= next_ids == eos_token_id
        new_ids = next_ids[:, None]
        ids = torch.cat([ids, new_ids], dim=1)
        if eos_token_id is not None and bool(finished.all()):
            break
    return ids


@torch.no_grad()
def beam_search(
    step: StepFunction,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    *,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    min_length: int = 0,
    repetition_penalty: float = 1.0,
) -> torch.Tensor:
    """Beam search. ``input_ids`` (B * num_beams, T) holds each prompt repeated ``num_beams``
    times (the step function's cache is built for that batch). Returns the best hypothesis of
    each prompt, (B, T + new), padded with ``pad_token_id`` (eos when None).

    Finished hypotheses are scored ``sum log p / new_length ** length_penalty``; like
    transformers, ``2 * num_beams`` candidates are kept per step so that ``num_beams`` beams stay
    alive when some end, and the search stops when no running beam can beat the worst finished
    one at the current length (``early_stopping=True``: as soon as ``num_beams`` are finished).
    """
    N, prompt_len = input_ids.shape
    if N % num_beams:
        raise ValueError(f"batch of {N} rows is not a multiple of num_beams={num_beams}")
    B, device = N // num_beams, input_ids.device
    max_len = prompt_len + max_new_tokens
    fill = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else -1)
    keep = 2 * num_beams

    running = torch.full((B, num_beams, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = input_ids.view(B, num_beams, prompt_len)
    running_scores = torch.zeros(B, num_beams, device=device)
    running_scores[:, 1:] = -1e9  # only the first copy of each prompt starts a beam
    done = running.clone()  # finished hypotheses
    done_scores = torch.full((B, num_beams), -1e9, device=device)
    done_lens = torch.full((B, num_beams), prompt_len, dtype=torch.long, device=device)
    is_done = torch.zeros(B, num_beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device)[:, None] * num_beams  # (B, 1)

    new_ids = input_ids
    for cur in range(prompt_len, max_len):
        logits = step(new_ids).float()  # (B * nb, V)
        log_probs = _process(
            F.log_softmax(logits, dim=-1), running[:, :, :cur].reshape(N, cur),
            eos_token_id=eos_token_id, min_length=min_length, repetition_penalty=repetition_penalty,
        )
        V = log_probs.shape[-1]
        total = (log_probs.view(B, num_beams, V) + running_scores[:, :, None]).view(B, num_beams * V)
        top_scores, top_idx = torch.topk(total, keep, dim=1)  # (B, 2nb)
        src_beam, token = top_idx // V, top_idx % V
        cand = running.gather(1, src_beam[:, :, None].expand(-1, -1, max_len)).clone()  # (B, 2nb, L)
        cand[:, :, cur] = token
        ends = torch.zeros_like(token, dtype=torch.bool) if eos_token_id is None else token == eos_token_id
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
        full = is_done.all(dim=1, keepdim=True) & early_stopping
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
        worst_done = torch.where(is_done, done_scores.min(dim=1, keepdim=True).values, torch.full_like(done_scores, -1e9))
        can_improve = can_improve & (best_running > worst_done).any(dim=-1, keepdim=True)
        if bool(ends.all()) or not bool(can_improve.any()) or bool(is_done.all() & early_stopping):
            break
        step.reorder(reorder)
        new_ids = running[:, :, cur : cur + 1].reshape(N, 1)
    out_len = int(done_lens[:, 0].max())
    return done[:, 0, :out_len]
