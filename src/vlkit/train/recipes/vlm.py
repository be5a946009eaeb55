"""The ``vlm-stage1`` and ``vlm-stage2`` recipes: LLaVA's two-stage training of a
:class:`vlkit.models.VLM`.

- ``vlm-stage1`` (alignment): only the projector trains, on image-caption pairs (each becomes
  ``<image>\\ndescribe the image.`` answered by the caption). The vision tower and the LLM are
  frozen: they require no grad (so the optimizer leaves them out) and stay in eval mode.
- ``vlm-stage2`` (instruction tuning): the projector and the LLM train on conversations
  (LLaVA JSONL with ``data.kind: conversations``, or the shapes' generated conversations), the
  LLM fully or, with ``lora: true``, through LoRA adapters on ``lora_target_modules``. The vision
  tower stays frozen. ``stage1_model`` names the stage-1 model folder to start from.

The loss is next-token cross-entropy on the assistant's answers only. The saved model folder
(``model/``) is the whole VLM, adapters merged; with LoRA, ``model/adapter/`` holds the adapters
and the projector (``adapter.safetensors``, ``adapter_config.json``), which
:func:`vlkit.layers.lora.load_adapter` puts on the stage-1 model.

Options (the config's ``task:`` section): see :class:`VLMOptions`.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.conversations import ConversationCollator, conversation_tokenizer, shapes_conversation
from ...data.loader import eval_loader
from ...layers.lora import LoRAConfig, apply_lora, merge_lora, save_adapter
from ...models.decoder import DecoderLM
from ...models.registry import PRESETS, replace_config
from ...models.vit import ViT
from ...models.vlm import VLM
from ...runtime import autocast, eval_mode
from ...tasks.vlm import VLMTask
from .base import Recipe
from .common import EvalOutput, check_model_spec, load_tokenizer, model_from_spec

CONVERSATION_TOKENIZER = "conversations"
ADAPTER_FOLDER = "adapter"


@dataclass(frozen=True)
class VLMOptions:
    tokenizer: str = CONVERSATION_TOKENIZER  # "conversations" (the shapes' word tokenizer), a preset or a folder
    stage1_model: str | None = None  # stage 2: the stage-1 model folder to start from (replaces model:)
    vision_model: str | None = None  # a CLIP (SigLIP) model folder: its image tower replaces the preset's
    language_model: str | None = None  # a decoder LM folder (an lm run's model/): it replaces the preset's LLM
    lora: bool = False  # stage 2: train the LLM through LoRA adapters (else fully)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: str = "attn.qkv,attn.proj"  # comma-separated module names (path suffixes) in the LLM
    eval_conversations: int = 200  # stage 2: greedy answers to the held-out conversations scored per type
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_dropout, self.target_modules())  # its checks
        if self.stage1_model is not None and (self.vision_model or self.language_model):
            raise ValueError(
                "task.stage1_model already holds the tower and the LLM: give it or task.vision_model / "
                "task.language_model, not both"
            )
        if self.eval_conversations < 0 or self.max_new_tokens < 1:
            raise ValueError(
                f"eval_conversations must be >= 0 and max_new_tokens >= 1, got {self.eval_conversations} "
                f"and {self.max_new_tokens}"
            )

    def target_modules(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_target_modules.split(",") if t.strip())

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig(self.lora_rank, self.lora_alpha, self.lora_dropout, self.target_modules())


class VLMTrainee(nn.Module):
    """A VLM with its frozen parts (``frozen``: child names) kept in eval mode and out of the
    optimizer. ``save_pretrained`` writes the VLM (adapters merged) and, with LoRA, the adapters
    and the projector into ``adapter/``."""

    def __init__(self, vlm: VLM, *, frozen: tuple[str, ...], lora: LoRAConfig | None = None) -> None:
        super().__init__()
        self.vlm, self.frozen, self.lora = vlm, frozen, lora
        for name in frozen:
            getattr(vlm, name).requires_grad_(False)
        if lora is not None:
            projector = [p.requires_grad for p in vlm.projector.parameters()]
            apply_lora(
                vlm.llm, target_modules=lora.target_modules, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout
            )
            for p, trains in zip(vlm.projector.parameters(), projector):
                p.requires_grad_(trains)

    @property
    def config(self):
        return self.vlm.config

    def train(self, mode: bool = True) -> VLMTrainee:
        super().train(mode)
        for name in self.frozen:
            getattr(self.vlm, name).eval()
        return self

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.vlm(pixel_values, input_ids, attention_mask)

    def merged(self) -> VLM:
        """The VLM as plain weights (a merged copy when it carries adapters)."""
        return self.vlm if self.lora is None else merge_lora(copy.deepcopy(self.vlm))

    def save_pretrained(self, folder, tokenizer=None) -> Path:
        folder = Path(self.merged().save_pretrained(folder, tokenizer=tokenizer))
        if self.lora is not None:
            extra = {f"projector.{k}": v for k, v in self.vlm.projector.state_dict().items()}
            save_adapter(self.vlm, folder / ADAPTER_FOLDER, self.lora, extra)
        return folder


def _vlm_recipe(stage: int) -> type[Recipe]:
    """The recipe of one stage (see the module docs: ``stage`` decides what trains). Both stages
    are built here from one class body, each a direct child of :class:`.base.Recipe`."""

    class VLMRecipe(Recipe):
        name = f"vlm-stage{stage}"
        validation_loss = "lm_loss"
        Options = VLMOptions
        default_preset = "vlm-shapes-tiny"

        def __init__(
            self, model_spec: dict[str, Any] | None = None, options: Any = None, *, loss: Any = None, **fields
        ) -> None:
            self.loss = loss  # the loss: section (chunk_size) is for contrastive tasks; a VLM has none
            self.model_spec = dict(model_spec or {"preset": self.default_preset})
            self.options = dataclasses.replace(options or self.Options(), **fields)
            check_model_spec(self.model_spec, self.options, self.name)
            name = self.options.tokenizer
            self.tokenizer = conversation_tokenizer() if name == CONVERSATION_TOKENIZER else load_tokenizer(name)
            self.task = self.build_task()

        def build_task(self) -> VLMTask:
            return VLMTask()

        def build_model(self) -> nn.Module:
            spec = self.model_spec
            if self.options.stage1_model is not None:
                spec = {"pretrained": self.options.stage1_model}
            if self.options.vision_model or self.options.language_model:
                vlm = vlm_from_parts(spec, self.options, self.tokenizer)
            else:
                vlm = model_from_spec(spec, expected=VLM, task=self.name)
            image = self.tokenizer.token_to_id("<image>")
            if image != vlm.config.image_token_id or self.tokenizer.vocab_size > vlm.config.text.vocab_size:
                raise ValueError(
                    f"the tokenizer (<image> id {image}, {self.tokenizer.vocab_size} tokens) does not fit the model "
                    f"(image_token_id {vlm.config.image_token_id}, vocabulary {vlm.config.text.vocab_size})"
                )
            if self.stage == 1:
                return VLMTrainee(vlm, frozen=("visual", "llm"))
            return VLMTrainee(vlm, frozen=("visual",), lora=self.options.lora_config() if self.options.lora else None)

        def image_model(self, model: nn.Module) -> nn.Module:
            return model.vlm if isinstance(model, VLMTrainee) else model

        def collate(self, seed: int = 0) -> Callable:
            return ConversationCollator(self.tokenizer, source="caption" if self.stage == 1 else "chat", seed=seed)

        def batch_size(self, batch: dict[str, Any]) -> int:
            return int(batch["input_ids"].shape[0]) if "input_ids" in batch else 0

        def evaluate(self, model: nn.Module, dataset, **kwargs) -> EvalOutput:
            """Validation ``lm_loss`` (the answers' cross-entropy) and, in stage 2 on the shapes, the
            accuracy of greedy answers per question type (``answer_accuracy``, ``accuracy_<type>``)."""
            device, precision = kwargs.get("device", "cpu"), kwargs.get("precision", "auto")
            total, count = 0.0, 0
            with eval_mode(model), torch.no_grad():
                for batch in eval_loader(dataset, self.collate(seed=0), kwargs.get("batch_size", 64)):
                    if "input_ids" not in batch:
                        continue
                    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    with autocast(device, precision):
                        loss = self.task.losses(model, batch)["lm_loss"]
                    n = int((batch["labels"][:, 1:] != -100).sum())
                    total, count = total + float(loss) * n, count + n
            metrics = {"lm_loss": total / max(count, 1), "loss": total / max(count, 1)}
            if self.stage == 2 and self.options.eval_conversations > 0 and hasattr(dataset, "attributes"):
                metrics.update(answer_accuracy(self.image_model(model), self.tokenizer, dataset, self.options, device))
            return EvalOutput(metrics)

        def summary(self, metrics: dict[str, float], num_images: int | None = None) -> list[str]:
            lines = [f"validation answer loss: {metrics['lm_loss']:.4f}"] if "lm_loss" in metrics else []
            if "answer_accuracy" in metrics:
                types = sorted(k[len("accuracy_") :] for k in metrics if k.startswith("accuracy_"))
                parts = ", ".join(f"{t} {metrics['accuracy_' + t]:.1f}%" for t in types)
                n = int(metrics["answers"])
                lines.append(
                    f"answer accuracy on {n} held-out answers (greedy): {metrics['answer_accuracy']:.1f}% ({parts})"
                )
            return lines

    VLMRecipe.stage = stage
    VLMRecipe.__qualname__ = VLMRecipe.__name__ = f"VLMStage{stage}Recipe"
    return VLMRecipe


def vlm_from_parts(spec: dict[str, Any], options: VLMOptions, tokenizer) -> VLM:
    """The VLM of a ``model`` section (a preset and overrides: the projector, the feature layer and
    strategy, the image token) whose image tower is the one of ``options.vision_model`` (a CLIP
    or SigLIP folder) and whose LLM is ``options.language_model`` (a decoder folder), when given:
    their configs replace the preset's ``vision`` / ``text`` and their weights are copied in."""
    import vlkit

    spec = dict(spec)
    preset = spec.pop("preset", None)
    if preset is None or "pretrained" in spec:
        raise ValueError("task.vision_model / task.language_model need a model.preset (the VLM to put them in)")
    if preset not in PRESETS:
        raise KeyError(f"unknown model {preset!r}; vlkit.list_models() gives the {len(PRESETS)} known ones")
    tower = llm = None
    parts: dict[str, Any] = {}
    if options.vision_model:
        source = vlkit.from_pretrained(options.vision_model)
        tower = getattr(source, "visual", None)
        if not isinstance(tower, ViT):
            raise TypeError(
                f"task.vision_model {options.vision_model}: expected a model with an image tower (CLIP, SigLIP), "
                f"got a {type(source).__name__}"
            )
        parts["vision"] = tower.config
    if options.language_model:
        llm = vlkit.from_pretrained(options.language_model)
        if not isinstance(llm, DecoderLM):
            raise TypeError(
                f"task.language_model {options.language_model}: expected a decoder LM (GPT, OPT, Llama), "
                f"got a {type(llm).__name__}"
            )
        _check_llm(llm, options.language_model, tokenizer, spec.get("image_token_id", PRESETS[preset]().image_token_id))
        parts.update(text=llm.config, text_model_type=None)
    both = sorted(set(spec) & set(parts))
    if both:
        raise ValueError(f"model.{both[0]} is given by the folder of task.vision_model / task.language_model")
    try:
        config = replace_config(PRESETS[preset](), **spec, **parts)  # VLMConfig's checks on the parts together
    except ValueError as e:
        raise ValueError(f"task.vision_model / task.language_model do not fit model.preset {preset}: {e}") from e
    vlm = VLM(config)
    if tower is not None:
        vlm.visual.load_state_dict(tower.state_dict())
    if llm is not None:
        vlm.llm.load_state_dict(llm.state_dict())
    return vlm


def _check_llm(llm: nn.Module, folder: str, tokenizer, image_token_id: int) -> None:
    """A ValueError unless the LLM reads the tokenizer's ids (its vocabulary, its end token)."""
    c = llm.config
    if tokenizer.vocab_size > c.vocab_size or not 0 <= image_token_id < c.vocab_size:
        raise ValueError(
            f"task.language_model {folder}: its vocabulary of {c.vocab_size} does not hold the tokenizer's "
            f"{tokenizer.vocab_size} tokens and the image token {image_token_id}"
        )
    if tokenizer.eos_token_id is not None and c.eos_token_id != tokenizer.eos_token_id:
        raise ValueError(
            f"task.language_model {folder}: its eos_token_id {c.eos_token_id} is not the tokenizer's end token "
            f"{tokenizer.eos_token_id}; train it with this tokenizer (task.tokenizer)"
        )


@torch.no_grad()
def answer_accuracy(vlm: VLM, tokenizer, dataset, options: VLMOptions, device) -> dict[str, float]:
    """Greedy answers to held-out shapes conversations (1-3 turns, the true earlier answers in the
    history): accuracy overall and per answer type, in percent."""
    from ...eval.chat import answer

    right: dict[str, list[bool]] = {}
    for index in range(min(options.eval_conversations, len(dataset))):
        item = dataset[index]
        turns = shapes_conversation(item["attributes"], random.Random(index))
        pixels = item["pixel_values"][None].to(device)
        for k in range(1, len(turns), 2):
            said = answer(vlm, tokenizer, pixels, turns[:k], max_new_tokens=options.max_new_tokens)
            right.setdefault(turns[k]["type"], []).append(said.strip() == turns[k]["value"])
    every = [r for rs in right.values() for r in rs]
    out = {"answers": float(len(every)), "answer_accuracy": 100.0 * sum(every) / max(len(every), 1)}
    out.update({f"accuracy_{t}": 100.0 * sum(rs) / len(rs) for t, rs in sorted(right.items())})
    return out


VLMStage1Recipe = _vlm_recipe(1)
VLMStage2Recipe = _vlm_recipe(2)
