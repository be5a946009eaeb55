"""BLIP-2 (Li et al. 2023): a frozen image encoder, a light Q-Former, a frozen language model.

- ``vision``: BLIP's image tower (a ViT with patch bias and a final norm; EVA ViT-g/14 in the
  paper), frozen.
- ``qformer``: :class:`~vlkit.models.qformer.QFormer`, whose learned queries read the image
  features; it is what BLIP-2 trains (stage 1 with the ITC/ITM/ITG masks, stage 2 through the LLM).
- ``language_projection`` and ``language_model`` (stage 2): the query outputs, projected into the
  LLM's embedding space, are a soft visual prompt put in front of the text embeddings of any vlkit
  decoder that follows the decoder protocol (``embed_tokens``, ``hidden_states(inputs_embeds=)``,
  ``logits``): GPT, OPT, ... An encoder-decoder LLM (T5) is not supported.
- ``vision_proj``, ``text_proj``, ``itm_head`` and ``temp`` (``retrieval_heads``): image-text
  contrast over the query outputs (one feature per query; the best query scores a pair) and
  matching over the averaged query outputs, as HF's ``Blip2ForImageTextRetrieval``.
- ``itg_head`` (``itg_head=True``; no HF checkpoint holds it): BLIP-2's stage-1 image-grounded text
  generation head on the Q-Former's text outputs under the ITG mask, BERT's LM head tied to the
  Q-Former's token embedding, as LAVIS has it.

``input_ids`` never hold image placeholder tokens (transformers 5 expects ``num_query_tokens`` of
them and silently ignores the image without them): vlkit puts the queries in front itself, and a
placeholder id in ``input_ids`` is an error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import BLIP2_VISION
from ..layers import KVCache
from ..runtime import eval_mode
from .base import Model, count_parameters
from .bert import MLMHead, init_weights
from .generation import decoding_step, generate_tokens
from .generation_config import GenerationConfig, resolve_generation_config
from .gpt import gpt_tiny
from .opt import opt_2_7b
from .qformer import QFormer, QFormerConfig
from .registry import FAMILIES, config_from_dict, register, register_family
from .vit import ViT, ViTConfig

blip2_vision_config = partial(ViTConfig, **BLIP2_VISION)
ENCODER_DECODER_LLMS = ("t5", "mt5", "umt5")  # refused by name: BLIP-2 here drives decoder-only LLMs
DECODER_PROTOCOL = ("embed_tokens", "hidden_states", "logits")
FROZEN_PARTS = ("vision", "language_model")  # frozen in both stages of BLIP-2's training


@dataclass(frozen=True)
class Blip2Config:
    model_type: ClassVar[str] = "blip2"
    vision: ViTConfig = field(default_factory=blip2_vision_config)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    llm_type: str | None = None  # the LLM's vlkit family ("gpt", "opt", ...); None: no LLM (stage 1, retrieval)
    llm: Any = None  # the LLM's config (read as that family's config when given as a mapping)
    # HF's image placeholder id (in the LLM's vocabulary), kept to write HF folders; never valid in input_ids
    image_token_id: int | None = None
    retrieval_heads: bool = False  # vision_proj, text_proj, itm_head, temp
    itg_head: bool = False  # stage 1's text generation head on the Q-Former (not in HF checkpoints)
    embed_dim: int = 256  # ITC feature size
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0  # scale() = 1 / temp, temp clamped to [1 / max_logit_scale, 0.5]

    def __post_init__(self) -> None:
        if not isinstance(self.vision, ViTConfig) or not isinstance(self.qformer, QFormerConfig):
            raise TypeError(
                f"Blip2Config takes vision: ViTConfig and qformer: QFormerConfig, got "
                f"{type(self.vision).__name__} and {type(self.qformer).__name__}"
            )
        if self.llm_type in ENCODER_DECODER_LLMS:
            raise ValueError(
                f"BLIP-2 with an encoder-decoder language model ({self.llm_type!r}, T5) is not supported; "
                "use a decoder-only LLM (OPT, GPT-2, Llama, ...)"
            )
        llm = self.llm
        if llm is not None and not isinstance(llm, dict) and self.llm_type is None:
            object.__setattr__(self, "llm_type", type(llm).model_type)
        if (llm is None) != (self.llm_type is None):
            raise ValueError("Blip2Config needs both llm_type and llm (a language model) or neither")
        if self.llm_type is not None and self.llm_type not in FAMILIES:
            raise ValueError(f"unknown language model family {self.llm_type!r}; expected one of {sorted(FAMILIES)}")
        if isinstance(llm, dict) and self.llm_type is not None:
            object.__setattr__(self, "llm", config_from_dict(FAMILIES[self.llm_type].config_class, llm))
        elif llm is not None and type(llm).model_type != self.llm_type:
            raise ValueError(f"llm_type {self.llm_type!r} does not match the llm config {type(llm).__name__}")
        if self.llm is None and not self.retrieval_heads:
            raise ValueError("Blip2Config needs a language model (llm) or retrieval_heads (or both)")
        for name in ("retrieval_heads", "itg_head"):
            if getattr(self, name) and not self.qformer.text_input:
                raise ValueError(f"{name} read text through the Q-Former: set qformer.text_input=True")
        if self.max_logit_scale < 2.0:
            raise ValueError(f"max_logit_scale must be >= 2 (temp <= 0.5), got {self.max_logit_scale}")


def itc_scores(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """BLIP-2's image-text similarity: per-query features (B, Q, D) against text features (N, D) ->
    (B, N), the best query's similarity (normalise both first for cosines)."""
    return torch.einsum("bqd,nd->bnq", image_features, text_features).max(dim=-1).values


@register_family
class Blip2(Model[Blip2Config]):
    """BLIP-2: ``vision``, ``qformer``, and as the config says ``language_projection`` +
    ``language_model``, the retrieval heads ``vision_proj``, ``text_proj``, ``itm_head``, ``temp``
    and the ITG head ``itg_head``."""

    config_class = Blip2Config
    language_model: Any  # a vlkit decoder (the decoder protocol), or None
    language_projection: nn.Linear | None
    vision_proj: nn.Linear | None
    text_proj: nn.Linear | None
    itm_head: nn.Linear | None
    temp: nn.Parameter | None
    itg_head: MLMHead | None

    def __init__(self, config: Blip2Config):
        super().__init__(config)
        c = config
        H = c.qformer.hidden_size
        self.vision = ViT(c.vision)
        self.qformer = QFormer(c.qformer, c.vision.width)
        self.language_model = self.language_projection = None
        if c.llm is not None and c.llm_type is not None:
            lm = FAMILIES[c.llm_type](c.llm)
            missing = [name for name in DECODER_PROTOCOL if not callable(getattr(lm, name, None))]
            if missing:
                raise TypeError(f"{type(lm).__name__} lacks {missing} of the decoder protocol BLIP-2 drives")
            self.language_model = lm
            self.language_projection = nn.Linear(H, c.llm.hidden_size)
        self.vision_proj = self.text_proj = self.itm_head = self.temp = None
        if c.retrieval_heads:
            self.vision_proj = nn.Linear(H, c.embed_dim)
            self.text_proj = nn.Linear(H, c.embed_dim)
            self.itm_head = nn.Linear(H, 2)
            self.temp = nn.Parameter(torch.tensor(float(c.init_temperature)))
        q = c.qformer
        self.itg_head = MLMHead(H, q.vocab_size, act=q.act, norm_eps=q.norm_eps) if c.itg_head else None
        for part in (self.language_projection, self.vision_proj, self.text_proj, self.itm_head, self.itg_head):
            if part is not None:
                part.apply(init_weights)

    def _non_persistent_ok(self) -> set[str]:
        return {"temp"}  # HF checkpoints have no ITC temperature; the init value stays

    def _require(self, part: str) -> Any:
        module = getattr(self, part)
        if module is None:
            what = "a language model (config.llm)" if part in ("language_model", "language_projection") else part
            raise ValueError(f"this BLIP-2 has no {what} (config: llm_type={self.config.llm_type!r}, "
                             f"retrieval_heads={self.config.retrieval_heads}, itg_head={self.config.itg_head})")  # fmt: skip
        return module

    # --- frozen parts -------------------------------------------------------------------------
    def frozen_modules(self) -> dict[str, nn.Module]:
        """The parts BLIP-2 keeps frozen in both stages (name -> module): the image encoder and the LLM."""
        return {name: m for name in FROZEN_PARTS if (m := getattr(self, name)) is not None}

    def freeze(self) -> Blip2:
        """Freeze :meth:`frozen_modules`: no gradients, eval mode (no dropout) even under ``train()``."""
        for module in self.frozen_modules().values():
            module.requires_grad_(False)
            module.eval()
        return self

    def train(self, mode: bool = True) -> Blip2:
        super().train(mode)
        for module in self.frozen_modules().values():  # a frozen part stays in eval mode
            if not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self

    def cast_frozen(self, dtype: torch.dtype) -> Blip2:
        """Keep the frozen parts in ``dtype`` (bf16 on a GPU halves their memory); the Q-Former and
        the heads stay as they are (float32), and activations are cast at the borders."""
        for module in self.frozen_modules().values():
            module.to(dtype)
        return self

    def frozen_digest(self) -> str:
        """SHA-256 over the frozen parts' tensors (names, dtypes, shapes, bytes): equal digests at
        the start and the end of training show the image encoder and the LLM were not changed."""
        digest = hashlib.sha256()
        for part, module in sorted(self.frozen_modules().items()):
            for name, tensor in sorted(module.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{part}.{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def parameter_counts(self) -> dict[str, int]:
        """{"trainable": n, "total": n} (each tensor once), the figure to print at the start of training."""
        trainable, total = count_parameters(self)
        return {"trainable": trainable, "total": total}

    # --- image -> queries -----------------------------------------------------------------------
    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> image tokens after the final norm (B, 1 + N, Cv); run without autograd
        when the tower is frozen."""
        frozen = not any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self.vision.encode(pixel_values.to(self.vision.cls_token.dtype))

    def query_outputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the Q-Former's query outputs (B, Q, H), in the Q-Former's dtype."""
        return self.qformer(self.image_embeds(pixel_values).to(self.qformer.query_tokens.dtype))

    def soft_prompt(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the queries projected into the LLM's embedding space (B, Q, H_llm)."""
        return self._require("language_projection")(self.query_outputs(pixel_values))

    # --- stage 2: the LLM -----------------------------------------------------------------------
    def _check_prompt(self, input_ids: torch.Tensor, batch: int) -> None:
        if input_ids.dim() != 2 or input_ids.shape[0] not in (1, batch) or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be (1 or {batch}, T >= 1), got shape {tuple(input_ids.shape)}")
        vocab = self.config.llm.vocab_size
        if bool((input_ids < 0).any()) or bool((input_ids >= vocab).any()):
            raise ValueError(f"input_ids must be ids of the language model's vocabulary [0, {vocab})")
        image_token = self.config.image_token_id
        if image_token is not None and bool((input_ids == image_token).any()):
            raise ValueError(
                f"input_ids hold the image placeholder token {image_token}: vlkit puts the "
                f"{self.config.qformer.num_query_tokens} queries in front itself; pass the prompt alone"
            )

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B, 3, H, W) and prompts (B, T) (the LLM tokenizer's ids, BOS included, no image
        placeholders) -> next-token logits at the text positions (B, T, V). ``attention_mask`` (B, T):
        1 for real tokens; padded prompts keep their positions (counted over real tokens)."""
        lm = self._require("language_model")
        B = pixel_values.shape[0]
        self._check_prompt(input_ids, B)
        input_ids = input_ids.expand(B, -1)
        text = lm.embed_tokens(input_ids)  # (B, T, H_llm)
        prompt = self.soft_prompt(pixel_values).to(text.dtype)  # (B, Q, H_llm)
        Q = prompt.shape[1]
        mask = position_ids = None
        if attention_mask is not None:
            mask = torch.cat([attention_mask.new_ones(B, Q), attention_mask.expand(B, -1)], dim=1)  # (B, Q + T)
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = lm.hidden_states(
            inputs_embeds=torch.cat([prompt, text], dim=1), attention_mask=mask, position_ids=position_ids
        )  # (B, Q + T, H_llm)
        return lm.logits(hidden[:, Q:])

    def _next_logits(
        self,
        new_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: KVCache,
        soft_prompt: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoding step: the first runs the soft prompt (N, Q, H) and the prompt ids, later
        ones the new ids (N, t) on the cache -> logits of the last position (N, V)."""
        lm = self.language_model
        embeds = lm.embed_tokens(new_ids)  # (N, t, H)
        if soft_prompt is not None:  # the first step
            embeds = torch.cat([soft_prompt.to(embeds.dtype), embeds], dim=1)  # (N, Q + t, H)
        hidden = lm.hidden_states(
            inputs_embeds=embeds, attention_mask=attention_mask, cache=cache, position_ids=position_ids
        )
        return lm.logits(hidden[:, -1])

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        generation_config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        **overrides,
    ) -> torch.Tensor:
        """Caption or answer: images (B, 3, H, W) and an optional prompt (B or 1, T) (BOS first, no
        image placeholders; default: BOS alone) -> the prompt followed by the new tokens (B, T + new).
        Left-padded prompts pass ``attention_mask``. Options from ``generation_config`` (default:
        20 new tokens, greedy) with keyword ``overrides`` (``max_new_tokens=``, ``num_beams=``,
        ``min_new_tokens=``, ``do_sample=``, ...)."""
        self._require("language_model")
        llm = self.config.llm
        config = resolve_generation_config(
            generation_config,
            overrides,
            default=GenerationConfig(),
            eos_token_id=llm.eos_token_id,
            pad_token_id=getattr(llm, "pad_token_id", None),
        )
        B = pixel_values.shape[0]
        if input_ids is None:
            if llm.bos_token_id is None:
                raise ValueError("this LLM has no bos_token_id: give a prompt (input_ids)")
            input_ids = torch.full((B, 1), llm.bos_token_id, dtype=torch.long, device=pixel_values.device)
        self._check_prompt(input_ids, B)
        input_ids = input_ids.expand(B, -1)
        with eval_mode(self):
            prompt = self.soft_prompt(pixel_values)  # (B, Q, H_llm)
            Q = prompt.shape[1]
            mask = None
            if attention_mask is not None:
                mask = torch.cat([attention_mask.new_ones(B, Q), attention_mask.expand(B, -1)], dim=1)  # (B, Q + T)
            step = decoding_step(
                self._next_logits, llm.num_layers, config, attention_mask=mask, first={"soft_prompt": prompt}
            )
            return generate_tokens(step, input_ids, config, generator=generator, max_positions=llm.max_positions - Q)

    # --- retrieval: ITC and ITM -----------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 3, H, W) -> ITC features, one per query (B, Q, D)."""
        f = self._require("vision_proj")(self.query_outputs(pixel_values))
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """(B, T) Q-Former tokenizer ids ([CLS] first) -> ITC text features of the first token (B, D)."""
        text_proj = self._require("text_proj")
        f = text_proj(self.qformer(input_ids=input_ids, attention_mask=attention_mask)[:, 0])
        return F.normalize(f, dim=-1) if normalize else f

    def itm_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image-text matching logits of B pairs (B, 2) (not matched, matched): the ITM head on every
        query output under the bidirectional mask, averaged over the queries."""
        itm_head = self._require("itm_head")
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"itm_logits scores pairs: got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts"
            )
        image = self.image_embeds(pixel_values).to(self.qformer.query_tokens.dtype)  # (B, 1 + N, Cv)
        hidden = self.qformer(image, input_ids, attention_mask, mode="itm")
        return itm_head(hidden[:, : self.config.qformer.num_query_tokens]).mean(dim=1)

    def itg_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Stage 1's image-grounded text generation: Q-Former ids (B, T) (BLIP-2 starts them with
        [DEC]) -> next-token logits at the text positions (B, T, V_qformer), the text seeing the
        queries and the earlier text (the ITG mask), the queries the image."""
        itg_head = self._require("itg_head")
        image = self.image_embeds(pixel_values).to(self.qformer.query_tokens.dtype)  # (B, 1 + N, Cv)
        hidden = self.qformer(image, input_ids, attention_mask, mode="itg")  # (B, Q + T, H)
        tokens = self.qformer.tokens
        assert tokens is not None  # itg_head needs qformer.text_input (checked by the config)
        return itg_head(hidden[:, self.config.qformer.num_query_tokens :], tokens.weight)

    def scale(self) -> torch.Tensor:
        """The ITC inverse temperature 1 / temp, temp clamped to [1 / max_logit_scale, 0.5]."""
        temp = self._require("temp")
        return 1.0 / temp.clamp(1.0 / self.config.max_logit_scale, 0.5)


@register("blip2-tiny")
def blip2_tiny() -> Blip2Config:
    """For tests and CPU smoke runs: 32-pixel images in 8-pixel patches, a 2-layer Q-Former of width
    32 with 8 queries, the retrieval heads and ``gpt-tiny`` as the language model."""
    return Blip2Config(
        vision=blip2_vision_config(image_size=32, patch_size=8, width=48, depth=2, num_heads=4, mlp_dim=96),
        qformer=QFormerConfig(
            vocab_size=1000,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            intermediate_size=64,
            max_positions=64,
            num_query_tokens=8,
        ),
        llm=gpt_tiny(),
        retrieval_heads=True,
        embed_dim=32,
    )


@register("blip2-opt-2.7b")
def blip2_opt_2_7b() -> Blip2Config:
    """The paper's BLIP-2 with OPT-2.7B: EVA ViT-g/14 (39 layers, 224 px), a BERT-base Q-Former with
    32 queries and the stage-1 heads, OPT-2.7B; HF's image placeholder id 50265. Frozen image
    encoder and LLM leave 188,047,875 of 3,825,596,931 parameters trainable (the paper: 188M)."""
    return Blip2Config(llm=opt_2_7b(), retrieval_heads=True, image_token_id=50265)
