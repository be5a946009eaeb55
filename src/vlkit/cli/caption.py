"""``vlkit caption`` and ``vlkit vqa``: BLIP and BLIP-2 image captioning and visual question answering; a
LLaVA-style VLM answers the question (vqa) or a request for a description (caption, or --prompt); a ViLT
answers by classification over its answer vocabulary.

    vlkit caption --model FOLDER photo1.jpg photo2.jpg [--num-beams 3] [--prompt "a picture of"]
    vlkit caption --model runs/blip-shapes photo.jpg --sample --top-p 0.9
    vlkit vqa --model FOLDER photo.jpg "what is in the picture?" [--answers answers.txt]
    vlkit vqa --model BLIP2_FOLDER photo.jpg "what is in the picture?" [--prompt "Question: {} Answer:"]

A BLIP-2 (with a language model) captions and answers by prompting its LLM: ``--prompt`` is the
text the caption continues, and for ``vqa`` the template the question is put in (zero-shot VQA as
the paper prompts it); the prompt goes to the LLM after its BOS token.

``--model`` takes what every command takes (:func:`vlkit.eval.load_model`): a model folder, a run
folder, a training checkpoint (.pt), or a hub id. For ``vqa`` a captioning BLIP folder with a
``vqa/`` sub-folder (what the ``blip-vqa`` recipe saves) stands for the VQA model in it.
"""

from __future__ import annotations

import argparse

import torch

from ..eval.captioning import decode_llm, llm_prompt_ids
from ..eval.datasets import read_answer_list
from ..eval.resolve import BLIP_TOKENIZER, load_model_and_tokenizer, require_captioner, vqa_model
from ..eval.vqa import BLIP2_VQA_PROMPT, classifies_answers, classify_answers
from ..models.blip2 import Blip2
from ..models.vlm import VLM
from ..runtime import resolve_device
from .generation_options import add_generation_arguments, generation_config_from_args, sampling_generator


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="BLIP model: a model folder, run folder, training checkpoint (.pt), or anything "
        "vlkit.from_pretrained reads",
    )
    p.add_argument(
        "--tokenizer", default=None, help=f"tokenizer name or folder (default: the model's own, else {BLIP_TOKENIZER})"
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "caption",
        help="caption images with a BLIP or BLIP-2 model (or a LLaVA-style VLM)",
        description="Print one caption per image (IMAGE<TAB>caption).",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _add_common(p)
    p.add_argument("--prompt", default=None, help='text the caption continues, e.g. "a picture of"')
    # BLIP's demo settings: beam search with 3 beams, 5 to 20 tokens
    add_generation_arguments(p, beams=3, max_new=20, min_length=5, sampling=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.set_defaults(run=run_caption)

    q = commands.add_parser(
        "vqa",
        help="answer a question about an image with a BLIP VQA model, a BLIP-2, a LLaVA-style VLM or a ViLT",
        description="Print the answer to QUESTION about IMAGE.",
    )
    q.add_argument("image", metavar="IMAGE")
    q.add_argument("question", metavar="QUESTION")
    _add_common(q)
    # BLIP's VQA settings: 3 beams, 1 to 10 tokens
    add_generation_arguments(q, beams=3, max_new=10, min_length=1)
    q.add_argument(
        "--answers",
        default=None,
        help="file with one candidate answer per line: rank them (BLIP's closed-set VQA) instead of generating; "
        "a ViLT picks the best of those its answer vocabulary holds",
    )
    q.add_argument("--k", type=int, default=128, help="answers shortlisted by their first token before ranking")
    q.add_argument(
        "--prompt",
        default=BLIP2_VQA_PROMPT,
        help=f"BLIP-2: the prompt the question is put in at {{}} (default {BLIP2_VQA_PROMPT!r}, the paper's)",
    )
    q.set_defaults(run=run_vqa)


def _load(args, pick):
    """(``pick(model, source)`` of the model ``--model`` names, on ``--device``, and its tokenizer);
    a LLaVA-style VLM is taken as it is. ``args.device`` becomes the checked torch device."""
    args.device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model, args.tokenizer)
    model = model if isinstance(model, VLM) else pick(model, args.model)
    return model.to(args.device).eval(), tokenizer


def _vlm_answer(model: VLM, tokenizer, pixels: torch.Tensor, message: str, config) -> str:
    """A VLM's greedy (or as ``config`` says) answer to ``message`` about one image (1, 3, H, W)."""
    from ..eval.chat import answer
    from ..tokenizers.chat import IMAGE_TOKEN

    turns = [{"from": "human", "value": f"{IMAGE_TOKEN}\n{message}"}]
    return answer(model, tokenizer, pixels, turns, max_new_tokens=None, generation_config=config).strip()


def read_images(paths, model) -> torch.Tensor:
    """Image files -> (B, 3, S, S) pixels preprocessed as the model expects. Files are decoded by
    :func:`vlkit.data.images.load_image`: a missing, unreadable or oversized file is an error naming it."""
    import vlkit

    from ..data.images import load_image

    transform = vlkit.image_transform(model)
    return torch.stack([transform(load_image(path)) for path in paths])  # (B, 3, S, S)


def ids_to_text(tokenizer, ids: torch.Tensor, config) -> str:
    """Generated ids (L,) -> text, without [DEC], [SEP], padding and ids the tokenizer lacks."""
    t = config.text
    drop = {t.bos_token_id, t.sep_token_id, t.pad_token_id, t.enc_token_id}
    n = tokenizer.vocab_size
    return tokenizer.decode([i for i in ids.tolist() if i not in drop and i < n], skip_special_tokens=True).strip()


def run_caption(args) -> int:
    config = generation_config_from_args(args)
    model, tokenizer = _load(args, require_captioner)
    if isinstance(model, VLM):  # one image at a time, asked for a description (or --prompt)
        from ..data.conversations import CAPTION_INSTRUCTION

        for path in args.images:
            pixels = read_images([path], model).to(args.device)
            print(f"{path}\t{_vlm_answer(model, tokenizer, pixels, args.prompt or CAPTION_INSTRUCTION, config)}")
        return 0
    generator = sampling_generator(args, args.device)
    blip2 = isinstance(model, Blip2)
    prompt = None
    if blip2:
        prompt = llm_prompt_ids(tokenizer, model.config.llm, args.prompt or "").to(args.device)  # (1, T): BOS prompt
    elif args.prompt:
        prompt = tokenizer([args.prompt])["input_ids"].to(args.device)  # (1, T): [CLS] prompt [SEP]
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    for start in range(0, len(args.images), args.batch_size):
        paths = args.images[start : start + args.batch_size]
        pixels = read_images(paths, model).to(args.device)
        with torch.no_grad():
            ids = model.generate(pixels, prompt, generation_config=config, generator=generator)
        for path, row in zip(paths, ids):
            text = (
                decode_llm(tokenizer, row, model.config.llm, skip=1)
                if blip2
                else ids_to_text(tokenizer, row, model.config)
            )
            print(f"{path}\t{text}")
    return 0


def run_vqa(args) -> int:
    config = generation_config_from_args(args)
    candidates = read_answer_list(args.answers) if args.answers else None
    model, tokenizer = _load(args, vqa_model)
    pixels = read_images([args.image], model).to(args.device)
    if isinstance(model, Blip2):
        if candidates is not None:
            raise ValueError("--answers ranks a closed answer list with a BLIP VQA model; BLIP-2 answers by generating")
        if "{}" not in args.prompt:
            raise ValueError(f"--prompt must hold {{}} where the question goes, got {args.prompt!r}")
        prompt = llm_prompt_ids(tokenizer, model.config.llm, args.prompt.replace("{}", args.question)).to(args.device)
        with torch.no_grad():
            ids = model.generate(pixels, prompt, generation_config=config)
        print(decode_llm(tokenizer, ids[0], model.config.llm, skip=prompt.shape[1]))
        return 0
    if isinstance(model, VLM):
        if candidates is not None:
            raise ValueError("--answers (ranking candidate answers) is for BLIP VQA models; a VLM generates its answer")
        print(_vlm_answer(model, tokenizer, pixels, args.question, config))
        return 0
    if classifies_answers(model):  # ViLT
        print(classify_answers(model, tokenizer, pixels, [args.question], candidates=candidates, device=args.device)[0])
        return 0
    question = tokenizer([args.question])
    q_ids, q_mask = question["input_ids"].to(args.device), question["attention_mask"].to(args.device)
    with torch.no_grad():
        if candidates is not None:
            enc = tokenizer(candidates)
            best = model.rank_answers(
                pixels, q_ids, q_mask, enc["input_ids"].to(args.device), enc["attention_mask"].to(args.device), k=args.k
            )
            print(candidates[int(best[0])])
        else:
            ids = model.answer(pixels, q_ids, q_mask, generation_config=config)
            print(ids_to_text(tokenizer, ids[0], model.config))
    return 0
