"""The ``blip2-stage1`` and ``blip2-stage2`` recipes: BLIP-2's two training stages
(:mod:`vlkit.tasks.blip2`), the image encoder and the LLM frozen in both: ``build_model`` calls
:meth:`~vlkit.models.blip2.Blip2.freeze` (``requires_grad`` False, so the optimizer leaves them out
(:func:`vlkit.train.optim.param_groups`); eval mode under ``model.train()``; the image encoder runs
without autograd), and the loop prints trainable and total parameters at the start.

``blip2-stage1`` options (:class:`Blip2Stage1Options`): ``tokenizer`` (the Q-Former's WordPiece: a
name, a folder or ``shapes``), ``label_smoothing`` (ITG's), ``same_caption_is_positive``,
``dec_token_id`` (the ITG start token; default: one id after the tokenizer's, which a preset's
Q-Former vocabulary gets). A preset is built with the retrieval and ITG heads and without an LLM.

``blip2-stage2`` options (:class:`Blip2Stage2Options`): ``stage1`` (the ``model`` folder a stage-1
run wrote: its image encoder, Q-Former and heads), ``llm`` (a decoder's folder, or a preset built
for the tokenizer's vocabulary), ``tokenizer`` (the LLM's; BOS/EOS are its bos/eos tokens, or
[CLS]/[SEP]), ``text`` (``caption``, ``qa`` or ``both``: which text an image's row carries),
``caption_prompt`` and ``vqa_prompt`` (``"Question: {} Answer:"``; the prompt is not scored),
``label_smoothing``. Without ``stage1`` the ``model`` section must give a BLIP-2 with an LLM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.loader import ImageTextCollator, eval_loader
from ...eval.captioning import captioning_scores, generate_captions
from ...eval.retrieval import encode_texts, recall_at_k, unique_captions
from ...eval.vqa import answer_questions, vqa_scores
from ...models.base import unwrap
from ...models.bert import init_weights
from ...models.blip2 import Blip2, itc_scores
from ...models.registry import config_to_dict
from ...models.vit import ViT
from ...runtime import autocast, eval_mode
from ...tasks.blip2 import Blip2Stage1Task, Blip2Stage2Task, pad_sequences, stage1_features, stage2_sequence
from .base import Recipe
from .blip import CaptionCollator, images_and_captions
from .blip_vqa import vqa_summary
from .common import EvalOutput, check_vocabulary, model_from_spec, retrieval_lines

STAGE2_TEXTS = ("caption", "qa", "both")


@dataclass(frozen=True)
class Blip2Stage1Options:
    tokenizer: str = "bert-base-uncased"  # the Q-Former's WordPiece (or "shapes", or a folder)
    label_smoothing: float = 0.1  # of the ITG loss
    same_caption_is_positive: bool = True  # equal captions are never ITM negatives of each other
    dec_token_id: int | None = None  # [DEC], the ITG start token; None: the tokenizer's vocab_size (one id after it)
    vision_model: str | None = None  # a CLIP (or SigLIP, BLIP, BLIP-2, ViT) folder: its image tower, frozen
    init_std: float | None = None  # re-initialise a preset's Q-Former and heads from N(0, init_std) (0.1 at width 32)
    retrieval_eval: bool = True  # ITC Recall@K on the validation images in evaluation

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.dec_token_id is not None and self.dec_token_id < 0:
            raise ValueError(f"dec_token_id must be >= 0, got {self.dec_token_id}")
        if self.init_std is not None and not self.init_std > 0:
            raise ValueError(f"init_std must be > 0, got {self.init_std}")


@dataclass(frozen=True)
class Blip2Stage2Options:
    tokenizer: str = "bert-base-uncased"  # the LLM's tokenizer (a name, a folder or "shapes")
    stage1: str | None = None  # the model folder of a blip2-stage1 run
    llm: str = "gpt-tiny"  # a decoder's folder, or a preset (built for the tokenizer's vocabulary)
    text: str = "both"  # caption, qa or both (alternate rows): what each image's text is
    caption_prompt: str = ""  # in front of a caption, not scored
    vqa_prompt: str = "Question: {} Answer:"  # "{}" is the question; not scored
    label_smoothing: float = 0.0
    caption_eval_images: int = 500  # greedy captions of this many validation images are scored (0: none)
    vqa_eval_questions: int = 500  # zero-shot answers (vqa_prompt) to this many validation questions (0: none)
    max_new_tokens: int = 16  # of a caption or an answer in evaluation

    def __post_init__(self) -> None:
        for name in ("caption_eval_images", "vqa_eval_questions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.text not in STAGE2_TEXTS:
            raise ValueError(f"text must be one of {STAGE2_TEXTS}, got {self.text!r}")
        if self.vqa_prompt.count("{}") != 1:
            raise ValueError(f"vqa_prompt must hold one '{{}}' for the question, got {self.vqa_prompt!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def frozen(model: Blip2) -> Blip2:
    """``model`` with its image encoder and LLM frozen (:meth:`Blip2.freeze`)."""
    return model.freeze()


def freeze_stage2_unused(model: Blip2) -> Blip2:
    """Stage 2 reads the queries alone: the retrieval and ITG heads and the Q-Former's text parts
    (its embeddings and the blocks' text feed-forward) get no gradient. They are frozen too, so that
    the optimizer holds none of them and DistributedDataParallel waits for no gradient of theirs."""
    parts: list[nn.Module | nn.Parameter | None] = [model.vision_proj, model.text_proj, model.itm_head, model.temp]
    q = model.qformer
    parts += [model.itg_head, q.tokens, q.positions]
    if model.config.qformer.text_input:  # the text's feed-forward (the queries have their own)
        for block in q.transformer.blocks:
            parts += [block.mlp, block.norm2]
    for part in parts:
        if part is not None:
            part.requires_grad_(False)
    return model


def mean_losses(task: Any, model: nn.Module, dataset, collate: Callable, *, batch_size: int, device, precision) -> dict:
    """Each loss of ``task`` averaged over the validation batches (weighted by their samples)."""
    device = torch.device(device)
    sums: dict[str, float] = {}
    n = 0
    with eval_mode(model), torch.no_grad():
        for batch in eval_loader(dataset, collate, batch_size):
            if "pixel_values" not in batch or len(set(batch["captions"])) < 2:  # ITM needs a negative
                continue
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with autocast(device, precision):
                losses = task.losses(model, batch)
            b = len(batch["captions"])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.float().item() * b
            n += b
    if n == 0:
        raise ValueError("the validation data has no usable batch (two different captions at least)")
    return {k: v / n for k, v in sums.items()}


def vision_tower(source: str) -> ViT:
    """The image tower of the model folder ``source``: a CLIP's or SigLIP's ``visual``, a BLIP's or
    BLIP-2's ``vision``, or a ViT itself."""
    import vlkit

    if not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(f"task.vision_model: no model folder (config.json) at {source}")
    model = vlkit.from_pretrained(source)
    tower = model if isinstance(model, ViT) else None
    for name in ("visual", "vision"):
        if tower is None and isinstance(getattr(model, name, None), ViT):
            tower = getattr(model, name)
    if tower is None:
        raise TypeError(
            f"task.vision_model {source} is a {type(model).__name__}; expected a model with a ViT image tower "
            "(CLIP, SigLIP, BLIP, BLIP-2 or a ViT)"
        )
    return tower


def with_tower_config(spec: dict[str, Any], tower: ViT, source: str) -> dict[str, Any]:
    """The ``model`` section ``spec`` with the loaded tower's config as its ``vision``: the image
    encoder's type follows the tower (a CLIP ViT keeps its pre-norm, bias-free patches and
    QuickGELU); a ``model.vision`` field that says otherwise is an error."""
    if "pretrained" in spec:
        raise ValueError(
            "task.vision_model gives the image encoder of a stage 1 built from a preset; model.pretrained "
            "already has one: give one of the two"
        )
    fields = config_to_dict(tower.config)
    for key, value in (spec.get("vision") or {}).items():
        if key in fields and fields[key] != (tuple(value) if isinstance(value, list) else value):
            raise ValueError(
                f"model.vision.{key}={value!r} differs from the image tower of {source} ({key}={fields[key]!r}): "
                "the image encoder is that tower; drop the override"
            )
    return {**spec, "vision": fields}


def reinit_trained_parts(model: Blip2, std: float) -> None:
    """Normal(0, ``std``) weights for the Q-Former (its queries too) and the heads; BERT's 0.02 learns
    slowly at tiny widths (as the blip recipe's ``init_std``)."""
    for part in (model.qformer, model.vision_proj, model.text_proj, model.itm_head, model.itg_head):
        if part is not None:
            part.apply(lambda m: init_weights(m, std=std))
    nn.init.normal_(model.qformer.query_tokens, std=std)


def frozen_check(blip2: Blip2, start: str | None, now: str) -> dict[str, float]:
    """``frozen_unchanged`` (1.0: the frozen parts' digest ``now`` equals the one at ``start``, when
    the recipe built the model) and ``frozen_parameters``."""
    if start is None:
        return {}
    n = sum(p.numel() for m in blip2.frozen_modules().values() for p in m.parameters())
    return {"frozen_unchanged": float(now == start), "frozen_parameters": float(n)}


def frozen_lines(start: str | None, now: str | None, metrics: dict[str, float]) -> list[str]:
    """The line proving the frozen parts unchanged: their digest when the model was built and now."""
    if start is None or now is None or "frozen_unchanged" not in metrics:
        return []
    verdict = "unchanged" if metrics["frozen_unchanged"] else "CHANGED"
    n = int(metrics.get("frozen_parameters", 0))
    return [
        f"frozen image encoder and LLM ({n:,} parameters): sha256 {start[:16]} at the start, {now[:16]} now: {verdict}"
    ]


@torch.no_grad()
def itc_retrieval(
    model: Blip2, tokenizer, dataset, collate: Callable, *, batch_size: int, device, precision
) -> dict[str, float]:
    """ITC Recall@1/5/10 both ways on the validation images and their unique captions, a pair
    scored by its best query (:func:`vlkit.models.blip2.itc_scores`)."""
    device = torch.device(device)
    pixels, captions = images_and_captions(dataset, collate, batch_size)
    texts, positives = unique_captions(captions)
    with eval_mode(model):
        image_f = []
        for i in range(0, len(pixels), batch_size):
            with autocast(device, precision):
                image_f.append(model.encode_image(pixels[i : i + batch_size].to(device), normalize=True).float().cpu())
        text_f = encode_texts(model, tokenizer, texts, batch_size=batch_size, device=device, precision=precision)
    return recall_at_k(itc_scores(torch.cat(image_f), text_f), positives)  # (N_img, Q, D) x (N_txt, D)


class Stage1Model(nn.Module):
    """The BLIP-2 stage 1 trains (``blip2``), whose ``forward`` is stage 1's first pass
    (:func:`vlkit.tasks.blip2.stage1_features`), so that it runs through a DistributedDataParallel
    wrapper. ``save_pretrained`` writes the BLIP-2 itself; ``config`` is its config."""

    def __init__(self, blip2: Blip2) -> None:
        super().__init__()
        self.blip2 = blip2

    @property
    def config(self):
        return self.blip2.config

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        return stage1_features(self.blip2, pixel_values, input_ids, attention_mask)

    def parameter_counts(self) -> dict[str, int]:
        return self.blip2.parameter_counts()

    def save_pretrained(self, folder, tokenizer=None) -> Path:
        return self.blip2.save_pretrained(folder, tokenizer=tokenizer)


class Blip2Stage1Recipe(Recipe):
    """BLIP-2 stage 1: the Q-Former learns ITC, ITM and ITG against the frozen image encoder.
    Evaluation: the three losses on the validation data ("loss" is ITC's)."""

    name = "blip2-stage1"
    validation_loss = "itc_loss"
    Options = Blip2Stage1Options
    default_preset = "blip2-tiny"

    @property
    def dec_token_id(self) -> int:
        o = self.options
        return self.tokenizer.vocab_size if o.dec_token_id is None else o.dec_token_id

    def build_task(self, all_ranks: bool = True) -> Blip2Stage1Task:
        o = self.options
        return Blip2Stage1Task(
            dec_token_id=self.dec_token_id,
            label_smoothing=o.label_smoothing,
            same_caption_is_positive=o.same_caption_is_positive,
            all_ranks=all_ranks,
        )

    def build_model(self) -> nn.Module:
        spec = dict(self.model_spec)
        source = self.options.vision_model
        tower = vision_tower(source) if source is not None else None
        if tower is not None and source is not None:
            spec = with_tower_config(spec, tower, source)
        if "preset" in spec and "pretrained" not in spec:
            qformer = {"vocab_size": self.tokenizer.vocab_size + 1, **(spec.get("qformer") or {})}
            spec = {
                "llm_type": None,
                "llm": None,
                "retrieval_heads": True,
                "itg_head": True,
                **spec,
                "qformer": qformer,
            }
        model = model_from_spec(spec, expected=Blip2, task=self.name)
        c = model.config
        if not (c.retrieval_heads and c.itg_head):
            raise ValueError(
                "the blip2-stage1 task trains ITC, ITM and ITG: the model needs retrieval_heads and itg_head"
            )
        check_vocabulary(self.tokenizer, self.options.tokenizer, c.qformer.vocab_size)
        if self.dec_token_id >= c.qformer.vocab_size:
            raise ValueError(
                f"task.dec_token_id {self.dec_token_id} is outside the Q-Former's vocabulary of {c.qformer.vocab_size}"
            )
        if tower is not None:
            model.vision.load_state_dict(tower.state_dict())
        if self.options.init_std is not None and "pretrained" not in spec:
            reinit_trained_parts(model, self.options.init_std)
        model = frozen(model)
        self.frozen_start: str | None = model.frozen_digest()
        return Stage1Model(model)

    def collate(self) -> Callable:
        return CaptionCollator(self.tokenizer)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """The mean validation losses ("loss": ITC's), ITC Recall@1/5/10 (``retrieval_eval``) and
        whether the frozen parts are unchanged; keyword arguments: batch_size, device, precision."""
        at = {k: kwargs.get(k, d) for k, d in (("batch_size", 64), ("device", "cpu"), ("precision", "auto"))}
        losses = mean_losses(
            self.build_task(all_ranks=False), model, dataset, self.collate(), **at
        )  # main process alone
        metrics = {"loss": losses["itc_loss"], **losses}
        inner = unwrap(model)
        blip2 = getattr(inner, "blip2", inner)
        if self.options.retrieval_eval:
            metrics.update(itc_retrieval(blip2, self.tokenizer, dataset, self.collate(), **at))
        self.frozen_now: str | None = blip2.frozen_digest()
        metrics.update(frozen_check(blip2, getattr(self, "frozen_start", None), self.frozen_now))
        return EvalOutput(metrics)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        if "itc_loss" not in metrics:
            return []
        lines = [
            f"validation losses: ITC {metrics['itc_loss']:.3f}, ITM {metrics['itm_loss']:.3f}, "
            f"ITG {metrics['itg_loss']:.3f}"
        ]
        lines += ["ITC " + line for line in retrieval_lines(metrics, num_images, rerank_k=None)]
        return lines + frozen_lines(getattr(self, "frozen_start", None), getattr(self, "frozen_now", None), metrics)


def llm_special_ids(tokenizer) -> tuple[int, int]:
    """(BOS, EOS) of the LLM's texts: the tokenizer's bos/eos tokens, else [CLS]/[SEP]."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if bos is None or eos is None:
        raise ValueError("the stage-2 tokenizer needs a BOS and an EOS token (bos/eos, or [CLS]/[SEP])")
    return bos, eos


class Stage2Collator:
    """Image batches with the LLM's texts: per row ``BOS prompt target EOS`` as ``llm_input_ids``,
    ``llm_attention_mask`` and ``llm_labels`` (BOS, prompt and padding -100). The target is the
    item's canonical caption (``target_caption``, else ``caption``) or its answer after the VQA
    prompt with its question; ``text="both"`` alternates them by row."""

    def __init__(self, tokenizer, options: Blip2Stage2Options) -> None:
        self.base, self.tokenizer, self.options = ImageTextCollator(tokenizer), tokenizer, options
        self.bos, self.eos = llm_special_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad = self.eos if pad is None else pad

    def prompt_and_target(self, item: dict[str, Any], row: int) -> tuple[str, str]:
        o = self.options
        qa = o.text == "qa" or (o.text == "both" and row % 2 == 1)
        if qa:
            if "question" not in item or "answer" not in item:
                raise ValueError("task.text qa/both needs items with a question and an answer (data.kind: shapes)")
            return o.vqa_prompt.format(item["question"]), item["answer"]
        return o.caption_prompt, item.get("target_caption", item["caption"])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def __call__(self, items):
        batch = self.base(items)
        kept = [it for it in items if "skipped" not in it]
        if not kept:
            return batch
        ids, labels = [], []
        for row, item in enumerate(kept):
            prompt, target = self.prompt_and_target(item, row)
            target_ids = self.encode((" " + target) if prompt else target)
            i, lab = stage2_sequence(self.encode(prompt), target_ids, bos_token_id=self.bos, eos_token_id=self.eos)
            ids.append(i)
            labels.append(lab)
        batch["llm_input_ids"] = pad_sequences(ids, self.pad)
        batch["llm_attention_mask"] = pad_sequences([[1] * len(r) for r in ids], 0)
        batch["llm_labels"] = pad_sequences(labels, -100)
        return batch


def llm_from(name: str, tokenizer) -> nn.Module:
    """A decoder from a folder, or a preset built for the tokenizer (its vocabulary, BOS and EOS)."""
    import vlkit

    if Path(name).is_dir():
        return vlkit.from_pretrained(name)
    bos, eos = llm_special_ids(tokenizer)
    return vlkit.create_model(name, vocab_size=tokenizer.vocab_size, bos_token_id=bos, eos_token_id=eos)


def with_llm(stage1: Blip2, llm: nn.Module) -> Blip2:
    """A BLIP-2 with the stage-1 model's image encoder, Q-Former and heads, ``llm`` as its language
    model and a new language projection."""
    config = dataclasses.replace(stage1.config, llm_type=type(llm.config).model_type, llm=llm.config)
    model = Blip2(config)
    kept = {
        k: v for k, v in stage1.state_dict().items() if not k.startswith(("language_model.", "language_projection."))
    }
    missing, unexpected = model.load_state_dict(kept, strict=False)
    stray = [k for k in missing if not k.startswith(("language_model.", "language_projection."))] + unexpected
    if stray:
        raise ValueError(f"the stage-1 model does not fit the stage-2 BLIP-2: {stray[:3]}")
    model.language_model.load_state_dict(llm.state_dict())
    return model


class Blip2Stage2Recipe(Recipe):
    """BLIP-2 stage 2: the Q-Former (and the new language projection) learn to prompt the frozen
    LLM. Evaluation: the validation LM loss."""

    name = "blip2-stage2"
    validation_loss = "lm_loss"
    Options = Blip2Stage2Options
    default_preset = "blip2-tiny"

    def build_task(self) -> Blip2Stage2Task:
        return Blip2Stage2Task(label_smoothing=self.options.label_smoothing)

    def build_model(self) -> nn.Module:
        import vlkit

        o = self.options
        if o.stage1 is not None:
            if not (Path(o.stage1) / "config.json").is_file():
                raise FileNotFoundError(f"task.stage1: no model folder (config.json) at {o.stage1}")
            stage1 = vlkit.from_pretrained(o.stage1)
            if not isinstance(stage1, Blip2):
                raise TypeError(f"task.stage1 must be a BLIP-2 folder, got a {type(stage1).__name__}")
            model = with_llm(stage1, llm_from(o.llm, self.tokenizer))
        else:
            spec = dict(self.model_spec)
            if "preset" in spec and "pretrained" not in spec:
                bos, eos = llm_special_ids(self.tokenizer)
                llm = {"vocab_size": self.tokenizer.vocab_size, "bos_token_id": bos, "eos_token_id": eos}
                spec["llm"] = {**llm, **(spec.get("llm") or {})}
            model = model_from_spec(spec, expected=Blip2, task=self.name)
            if model.language_model is None:
                raise ValueError("the blip2-stage2 task needs a BLIP-2 with an LLM: give task.stage1 and task.llm")
        self.check_llm(model)
        model = freeze_stage2_unused(frozen(model))
        self.frozen_start: str | None = model.frozen_digest()
        return model

    def check_llm(self, model: Blip2) -> None:
        llm = model.config.llm
        check_vocabulary(self.tokenizer, self.options.tokenizer, llm.vocab_size)
        bos, eos = llm_special_ids(self.tokenizer)
        if (llm.bos_token_id, llm.eos_token_id) != (bos, eos):
            raise ValueError(
                f"the LLM's bos/eos ids {llm.bos_token_id}/{llm.eos_token_id} differ from the tokenizer's {bos}/{eos}"
            )

    def collate(self) -> Callable:
        return Stage2Collator(self.tokenizer, self.options)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """The mean validation LM loss, greedy captions' CIDEr-D / BLEU / exact match, zero-shot VQA
        accuracy (per question type) by prompting the frozen LLM with ``vqa_prompt``, and whether the
        frozen parts are unchanged; keyword arguments: batch_size, device, precision."""
        at = {k: kwargs.get(k, d) for k, d in (("batch_size", 64), ("device", "cpu"), ("precision", "auto"))}
        losses = mean_losses(self.task, model, dataset, self.collate(), **at)
        metrics = {"loss": losses["lm_loss"], **losses}
        blip2 = unwrap(model)
        metrics.update(stage2_generation_metrics(blip2, self.tokenizer, dataset, self.options, **at))
        self.frozen_now: str | None = blip2.frozen_digest()
        metrics.update(frozen_check(blip2, getattr(self, "frozen_start", None), self.frozen_now))
        return EvalOutput(metrics)

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        if not metrics:
            return []
        lines = [f"validation LM loss (soft prompt, target text only): {metrics['lm_loss']:.3f}"]
        if "caption_cider" in metrics:
            lines.append(
                f"captions of {int(metrics['caption_images'])} held-out images (greedy, frozen LLM): CIDEr-D "
                f"{metrics['caption_cider']:.3f}, BLEU-4 {metrics['caption_bleu_4']:.3f}, "
                f"exact match {metrics['caption_exact_match']:.1f}%"
            )
        lines += [line.replace("VQA accuracy", "zero-shot VQA accuracy", 1) for line in vqa_summary(metrics)]
        return lines + frozen_lines(getattr(self, "frozen_start", None), getattr(self, "frozen_now", None), metrics)


@torch.no_grad()
def stage2_generation_metrics(
    model: Blip2, tokenizer, dataset, options: Blip2Stage2Options, *, batch_size: int, device, precision
) -> dict[str, float]:
    """Greedy captions of the first ``caption_eval_images`` validation images against their
    canonical caption (``caption_*``: BLEU-1..4, CIDEr-D, exact match) and greedy answers to the
    first ``vqa_eval_questions`` questions in ``vqa_prompt`` (``vqa_accuracy``, ``vqa_exact_match``,
    ``vqa_accuracy_<type>``), both by the frozen LLM reading the soft prompt."""
    n = min(max(options.caption_eval_images, options.vqa_eval_questions), len(dataset))
    items = [dataset[i] for i in range(n)]
    items = [it for it in items if "pixel_values" in it]
    if not items:
        return {}
    pixels = torch.stack([it["pixel_values"] for it in items])  # (N, 3, H, W)
    out: dict[str, float] = {}
    k = min(options.caption_eval_images, len(items))
    if k:
        batches = [pixels[i : min(i + batch_size, k)] for i in range(0, k, batch_size)]
        captions = generate_captions(
            model, tokenizer, batches, prompt=options.caption_prompt or None, device=device, precision=precision,
            max_new_tokens=options.max_new_tokens,
        )  # fmt: skip
        refs = [[it.get("target_caption", it.get("caption", ""))] for it in items[:k]]
        out["caption_images"] = float(k)
        out.update({f"caption_{name}": v for name, v in captioning_scores(captions, refs).items()})
    k = min(options.vqa_eval_questions, len(items))
    if k and "question" in items[0]:
        qa = items[:k]
        answers = answer_questions(
            model, tokenizer, pixels[:k], [it["question"] for it in qa], prompt=options.vqa_prompt, device=device,
            precision=precision, batch_size=batch_size, max_new_tokens=options.max_new_tokens,
        )  # fmt: skip
        types = [it.get("question_type", "") for it in qa]
        scores = vqa_scores(answers, [[it["answer"]] for it in qa], types if all(types) else None)
        out.update({"vqa_questions": float(k), "vqa_accuracy": scores["vqa_accuracy"]})
        out["vqa_exact_match"] = scores["exact_match"]
        out.update({f"vqa_{name}": v for name, v in scores.items() if name.startswith("accuracy_")})
    return out
