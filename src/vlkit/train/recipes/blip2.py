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
from ...models.blip2 import Blip2
from ...runtime import autocast, eval_mode
from ...tasks.blip2 import Blip2Stage1Task, Blip2Stage2Task, pad_sequences, stage1_features, stage2_sequence
from .base import Recipe
from .blip import CaptionCollator
from .common import EvalOutput, check_vocabulary, model_from_spec

STAGE2_TEXTS = ("caption", "qa", "both")


@dataclass(frozen=True)
class Blip2Stage1Options:
    tokenizer: str = "bert-base-uncased"  # the Q-Former's WordPiece (or "shapes", or a folder)
    label_smoothing: float = 0.1  # of the ITG loss
    same_caption_is_positive: bool = True  # equal captions are never ITM negatives of each other
    dec_token_id: int | None = None  # [DEC], the ITG start token; None: the tokenizer's vocab_size (one id after it)

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.dec_token_id is not None and self.dec_token_id < 0:
            raise ValueError(f"dec_token_id must be >= 0, got {self.dec_token_id}")


@dataclass(frozen=True)
class Blip2Stage2Options:
    tokenizer: str = "bert-base-uncased"  # the LLM's tokenizer (a name, a folder or "shapes")
    stage1: str | None = None  # the model folder of a blip2-stage1 run
    llm: str = "gpt-tiny"  # a decoder's folder, or a preset (built for the tokenizer's vocabulary)
    text: str = "both"  # caption, qa or both (alternate rows): what each image's text is
    caption_prompt: str = ""  # in front of a caption, not scored
    vqa_prompt: str = "Question: {} Answer:"  # "{}" is the question; not scored
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
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
        return Stage1Model(frozen(model))

    def collate(self) -> Callable:
        return CaptionCollator(self.tokenizer)

    def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
        """The mean validation losses ("loss": ITC's); keyword arguments: batch_size, device, precision."""
        losses = mean_losses(
            self.build_task(all_ranks=False),  # the main process evaluates alone
            model,
            dataset,
            self.collate(),
            batch_size=kwargs.get("batch_size", 64),
            device=kwargs.get("device", "cpu"),
            precision=kwargs.get("precision", "auto"),
        )
        return EvalOutput({"loss": losses["itc_loss"], **losses})

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        if "itc_loss" not in metrics:
            return []
        return [
            f"validation losses: ITC {metrics['itc_loss']:.3f}, ITM {metrics['itm_loss']:.3f}, "
            f"ITG {metrics['itg_loss']:.3f}"
        ]


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
        return freeze_stage2_unused(frozen(model))

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
        """The mean validation LM loss; keyword arguments: batch_size, device, precision."""
        losses = mean_losses(
            self.task,
            model,
            dataset,
            self.collate(),
            batch_size=kwargs.get("batch_size", 64),
            device=kwargs.get("device", "cpu"),
            precision=kwargs.get("precision", "auto"),
        )
        return EvalOutput({"loss": losses["lm_loss"], **losses})

    def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
        return [f"validation LM loss (soft prompt, target text only): {metrics['lm_loss']:.3f}"] if metrics else []
