"""VQA evaluation: answer questions with a BLIP VQA model (``decoder_context="question"``), by
generation or by ranking a closed answer list, zero-shot with a BLIP-2 by prompting its language
model (``BLIP2_VQA_PROMPT``, the paper's), or with a ViLT (classification over its answer
vocabulary, ``config.answers``), and score the answers.

    answers = answer_questions(model, tokenizer, pixel_values, questions)            # generation
    answers = rank_answer_list(model, tokenizer, pixel_values, questions, candidates)  # ranking
    answers = classify_answers(vilt, tokenizer, pixel_values, questions)              # ViLT
    vqa_scores(answers, answer_lists, types)   # {"vqa_accuracy", "exact_match", "accuracy_<type>"}

Generation runs the questions of one length together: ``Blip.answer`` lets the decoder attend
to every question position (as BLIP and transformers generate), so padding must not reach it;
grouping by tokenized length means no row is ever padded.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

from ..models.blip2 import Blip2
from ..models.generation_config import GenerationConfig
from ..runtime import autocast, eval_mode
from .vqa_metrics import normalize_answer, vqa_accuracy

SINGLE_ANSWER_ANNOTATORS = 10  # a question with one answer counts as ten annotators who agree
# BLIP's VQA decoding: 1 to 10 answer tokens (BLIP evaluates with 3 beams, see the CLI)
VQA_GENERATION = GenerationConfig(max_new_tokens=10, min_length=1)
BLIP2_VQA_PROMPT = "Question: {} Answer:"  # BLIP-2's zero-shot VQA prompt; {} is the question


def _check(pixel_values: torch.Tensor, questions: Sequence[str]) -> None:
    if pixel_values.shape[0] != len(questions):
        raise ValueError(f"got {pixel_values.shape[0]} images but {len(questions)} questions")


def _decode_answer(tokenizer, row: torch.Tensor, text_config) -> str:
    from .captioning import decode_generated

    return decode_generated(tokenizer, row, text_config, skip=1)


@torch.no_grad()
def answer_questions(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    questions: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    batch_size: int = 256,
    generation_config: GenerationConfig | None = None,
    prompt: str = BLIP2_VQA_PROMPT,
    **overrides,
) -> list[str]:
    """The generated answer to ``questions[i]`` about image ``pixel_values[i]`` (N, 3, H, W). A
    BLIP-2 answers the question put in ``prompt`` (at ``{}``) by continuing it with its LLM.

    Questions are tokenized one by one and run in groups of equal length (no padding), at most
    ``batch_size`` at a time. ``generation_config`` (default ``VQA_GENERATION``: greedy, at most
    10 tokens) and the keyword ``overrides`` (``num_beams=3`` as BLIP's demo, ...) go to
    ``model.answer``.
    """
    _check(pixel_values, questions)
    device = torch.device(device)
    config = (generation_config or VQA_GENERATION).replace(**overrides)
    blip2 = isinstance(model, Blip2)
    if blip2 and "{}" not in prompt:
        raise ValueError(f"the VQA prompt must hold {{}} where the question goes, got {prompt!r}")
    if blip2:
        from .captioning import decode_llm, llm_prompt_ids

        encoded = [llm_prompt_ids(tokenizer, model.config.llm, prompt.replace("{}", q))[0] for q in questions]
    else:
        encoded = [tokenizer([q])["input_ids"][0] for q in questions]  # (T_i,) each
    groups: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        groups[len(ids)].append(i)
    answers: list[str] = [""] * len(questions)
    with eval_mode(model):
        for _, index in sorted(groups.items()):
            for s in range(0, len(index), batch_size):
                part = index[s : s + batch_size]
                ids = torch.stack([encoded[i] for i in part]).to(device)  # (b, T), no padding
                with autocast(device, precision):
                    if blip2:  # the prompt, then the answer
                        out = model.generate(pixel_values[part].to(device), ids, generation_config=config)
                    else:
                        out = model.answer(
                            pixel_values[part].to(device), ids, torch.ones_like(ids), generation_config=config
                        )  # (b, L)
                for i, row in zip(part, out.cpu()):
                    if blip2:
                        answers[i] = decode_llm(tokenizer, row, model.config.llm, skip=ids.shape[1])
                    else:
                        answers[i] = _decode_answer(tokenizer, row, model.config.text)
    return answers


@torch.no_grad()
def rank_answer_list(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    questions: Sequence[str],
    candidates: Sequence[str],
    *,
    k: int = 128,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    batch_size: int = 64,
) -> list[str]:
    """BLIP's closed-set VQA: for each question the candidate answer with the highest likelihood
    among the ``k`` whose first token is most likely (:meth:`vlkit.models.Blip.rank_answers`)."""
    _check(pixel_values, questions)
    if not candidates:
        raise ValueError("the answer list is empty")
    device = torch.device(device)
    cand = tokenizer(list(candidates), padding="longest")
    a_ids, a_mask = cand["input_ids"].to(device), cand["attention_mask"].to(device)  # (A, L)
    out: list[str] = []
    with eval_mode(model):
        for s in range(0, len(questions), batch_size):
            q = tokenizer(list(questions[s : s + batch_size]), padding="longest")
            with autocast(device, precision):
                best = model.rank_answers(
                    pixel_values[s : s + batch_size].to(device),
                    q["input_ids"].to(device),
                    q["attention_mask"].to(device),
                    a_ids,
                    a_mask,
                    k=k,
                )  # (b,)
            out += [candidates[i] for i in best.tolist()]
    return out


def classifies_answers(model) -> bool:
    """Whether ``model`` answers by classification over an answer vocabulary (a ViLT with a VQA head)."""
    return bool(getattr(getattr(model, "config", None), "answers", ()))


@torch.no_grad()
def classify_answers(
    model,
    tokenizer,
    pixel_values: torch.Tensor,
    questions: Sequence[str],
    *,
    candidates: Sequence[str] | None = None,
    device: torch.device | str = "cpu",
    precision: str = "auto",
    batch_size: int = 256,
) -> list[str]:
    """The best-scored answer of the model's vocabulary (``model.config.answers``) to each question
    about image ``pixel_values[i]``; with ``candidates``, the best among those of them the
    vocabulary holds (a ValueError when it holds none)."""
    _check(pixel_values, questions)
    vocabulary = list(model.config.answers)
    allowed = torch.ones(len(vocabulary), dtype=torch.bool)
    if candidates is not None:
        wanted = set(candidates)
        allowed = torch.tensor([a in wanted for a in vocabulary])
        if not allowed.any():
            raise ValueError(f"none of the {len(wanted)} candidate answers is among the model's {len(vocabulary)}")
    device = torch.device(device)
    out: list[str] = []
    with eval_mode(model):
        for s in range(0, len(questions), batch_size):
            q = tokenizer(list(questions[s : s + batch_size]), padding="longest")
            with autocast(device, precision):
                logits = model.vqa_logits(
                    pixel_values[s : s + batch_size].to(device),
                    q["input_ids"].to(device),
                    q["attention_mask"].to(device),
                ).float()  # (b, A)
            logits = logits.cpu().masked_fill(~allowed, float("-inf"))
            out += [vocabulary[i] for i in logits.argmax(-1).tolist()]
    return out


def vqa_scores(
    predictions: Sequence[str], answer_lists: Sequence[Sequence[str]], types: Sequence[str] | None = None
) -> dict[str, float]:
    """Percentages: ``vqa_accuracy`` (the official VQA formula over each question's human answers;
    a question with a single answer counts it as given by ten agreeing annotators, so it scores 1
    or 0), ``exact_match`` (the normalised prediction equals the normalised most common answer)
    and, with ``types``, ``accuracy_<type>`` (VQA accuracy per question type)."""
    if len(predictions) != len(answer_lists):
        raise ValueError(f"got {len(predictions)} predictions but {len(answer_lists)} answer lists")
    if not predictions:
        raise ValueError("no questions to score")
    accs, exact = [], []
    for pred, answers in zip(predictions, answer_lists):
        answers = list(answers)
        if not answers:
            raise ValueError("every question needs at least one answer")
        humans = answers * SINGLE_ANSWER_ANNOTATORS if len(answers) == 1 else answers
        accs.append(vqa_accuracy(pred, humans))
        top = Counter(answers).most_common(1)[0][0]  # the first one on ties
        exact.append(normalize_answer(pred) == normalize_answer(top))
    out = {"vqa_accuracy": 100.0 * sum(accs) / len(accs), "exact_match": 100.0 * sum(exact) / len(exact)}
    if types is not None:
        if len(types) != len(predictions):
            raise ValueError(f"got {len(types)} question types for {len(predictions)} questions")
        by_type: dict[str, list[float]] = defaultdict(list)
        for t, a in zip(types, accs):
            by_type[t].append(a)
        for t in sorted(by_type):
            out[f"accuracy_{t}"] = 100.0 * sum(by_type[t]) / len(by_type[t])
    return out
