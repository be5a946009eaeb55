"""A LLaVA-style VLM (Liu et al. 2023): a CLIP image tower, a projector into the LLM's embedding
space, and any vlkit decoder LLM (GPT, OPT, Llama) driven through the decoder protocol
(``embed_tokens``, ``hidden_states(..., inputs_embeds=)``, ``logits``).

An image becomes ``num_image_tokens`` LLM inputs: the tower's hidden states at
``vision_feature_layer`` (before the final norm), without [CLS] (``"default"``) or with it
(``"full"``), through the projector (``"mlp2x_gelu"``: LLaVA-1.5's Linear-GELU-Linear, or
``"linear"``). In ``input_ids`` the image token stands either once per image feature (as HF's
processor expands it) or once per image (vlkit expands it); any other count is an error. Images
fill the image tokens in order: row by row, left to right, ``pixel_values`` holding every image
of the batch in that order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..layers import GELU, KVCache
from ..runtime import eval_mode
from .base import Model
from .bert import init_weights
from .clip import clip_vision_config
from .generation import CachedStep, decoding_step, generate_tokens
from .generation_config import GenerationConfig, resolve_generation_config
from .gpt import GPTConfig
from .registry import FAMILIES, config_from_dict, register, register_family
from .vit import ViT, ViTConfig

STRATEGIES = ("default", "full")  # drop the [CLS] feature, or keep it
PROJECTORS = ("mlp2x_gelu", "linear")
DECODER_PROTOCOL = ("embed_tokens", "hidden_states", "logits")


@dataclass(frozen=True)
class VLMConfig:
    """``text`` is the config of a vlkit decoder family (``text_model_type`` names it; a mapping
    of its fields is read as that family's config)."""

    model_type: ClassVar[str] = "vlm"
    vision: ViTConfig = field(default_factory=clip_vision_config)
    text: Any = field(default_factory=GPTConfig)
    text_model_type: str | None = None
    image_token_id: int = -1  # must be set: the <image> token's id
    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector: str = "mlp2x_gelu"
    projector_bias: bool = True
    num_image_tokens: int = field(init=False)  # LLM inputs per image

    def __post_init__(self) -> None:
        text = self.text
        if dataclasses.is_dataclass(text):
            kind = self.text.model_type
            if self.text_model_type not in (None, kind):
                raise ValueError(f"text_model_type {self.text_model_type!r} but text is a {type(text).__name__}")
            object.__setattr__(self, "text_model_type", kind)
        elif isinstance(text, dict):
            if self.text_model_type not in FAMILIES:
                raise ValueError(
                    f"text_model_type {self.text_model_type!r} names no vlkit family; expected one of {sorted(FAMILIES)}"
                )
            object.__setattr__(self, "text", config_from_dict(FAMILIES[self.text_model_type].config_class, text))
        else:
            raise ValueError(f"VLMConfig.text must be a decoder config or a mapping of its fields, got {text!r}")
        if self.image_token_id < 0:
            raise ValueError(f"VLMConfig needs image_token_id (the <image> token's id), got {self.image_token_id!r}")
        if self.vision_feature_select_strategy not in STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy {self.vision_feature_select_strategy!r}; expected one of {STRATEGIES}"
            )
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector {self.projector!r}; expected one of {PROJECTORS}")
        depth = self.vision.depth
        if not -(depth + 1) <= self.vision_feature_layer <= depth:
            raise ValueError(
                f"vision_feature_layer {self.vision_feature_layer} is outside the {depth}-layer tower's "
                f"[-{depth + 1}, {depth}]"
            )
        cls = 1 if self.vision_feature_select_strategy == "full" else 0
        object.__setattr__(self, "num_image_tokens", self.vision.num_patches + cls)


class Projector(nn.Module):
    """Image features (..., Cv) -> LLM embeddings (..., H): ``fc1`` alone ("linear"), or ``fc1``,
    exact GELU, ``fc2`` ("mlp2x_gelu")."""

    def __init__(self, in_dim: int, out_dim: int, *, kind: str = "mlp2x_gelu", bias: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim, bias=bias)
        self.act: nn.Module | None = GELU("none") if kind == "mlp2x_gelu" else None
        self.fc2: nn.Linear | None = nn.Linear(out_dim, out_dim, bias=bias) if kind == "mlp2x_gelu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.act is not None and self.fc2 is not None:
            x = self.fc2(self.act(x))
        return x


@dataclass
class _Prompt:
    """The LLM's view of a batch: ids with every image token expanded (B, L), their mask (B, L)
    or None, the input embeddings with image features in place (B, L, H), and where each given
    token landed (B, T), None when nothing moved."""

    ids: torch.Tensor
    mask: torch.Tensor | None
    embeds: torch.Tensor
    index: torch.Tensor | None


@register_family
class VLM(Model[VLMConfig]):
    config_class = VLMConfig

    def __init__(self, config: VLMConfig):
        super().__init__(config)
        c = config
        self.visual = ViT(c.vision)
        self.llm = FAMILIES[str(c.text_model_type)](c.text)
        missing = [name for name in DECODER_PROTOCOL if not callable(getattr(self.llm, name, None))]
        if missing:
            raise ValueError(f"a VLM's LLM must be a vlkit decoder; {c.text_model_type!r} lacks {', '.join(missing)}")
        self.projector = Projector(c.vision.width, c.text.hidden_size, kind=c.projector, bias=c.projector_bias)
        self.projector.apply(init_weights)

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> LLM inputs (N, num_image_tokens, H) per image."""
        c = self.config
        hidden = self.visual.hidden_states_at(pixel_values, c.vision_feature_layer)  # (N, 1 + P, Cv)
        if c.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]  # (N, P, Cv)
        return self.projector(hidden)

    def _expand(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, is_image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Each image token repeated ``num_image_tokens`` times; rows that grew less are padded on
        the left. -> ids (B, L), mask (B, L) or None, index (B, T) of each given token's last copy."""
        B, T = input_ids.shape
        repeats = torch.where(is_image, self.config.num_image_tokens, 1)  # (B, T)
        lengths = repeats.sum(dim=1)  # (B,)
        L = int(lengths.max())
        shift = L - lengths  # (B,) left padding added to each row
        index = shift[:, None] + repeats.cumsum(dim=1) - 1  # (B, T)
        flat = repeats.reshape(-1)  # (B * T,) copies of each given token, row after row
        rows = torch.arange(B, device=input_ids.device).repeat_interleave(lengths)  # (sum lengths,)
        starts = lengths.cumsum(0) - lengths  # (B,) where each row begins in the flat expansion
        cols = shift[rows] + torch.arange(rows.numel(), device=rows.device) - starts[rows]  # (sum lengths,)
        ids = input_ids.new_zeros(B, L)
        ids[rows, cols] = input_ids.reshape(-1).repeat_interleave(flat)
        mask = None
        if attention_mask is not None or bool((shift > 0).any()):
            given = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            mask = input_ids.new_zeros(B, L)
            mask[rows, cols] = given.reshape(-1).repeat_interleave(flat).to(mask.dtype)
        return ids, mask, index

    def _prompt(
        self, pixel_values: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> _Prompt:
        """Check the image tokens against the images, expand them when given once per image, and
        put the image features in their place."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        if pixel_values is not None and pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (num_images, 3, H, W), got shape {tuple(pixel_values.shape)}")
        c = self.config
        F = c.num_image_tokens
        is_image = input_ids == c.image_token_id  # (B, T)
        found, n = int(is_image.sum()), 0 if pixel_values is None else pixel_values.shape[0]
        index = None
        ids, mask = input_ids, attention_mask
        if found == n * F:
            per_row = is_image.sum(dim=1)
            if bool((per_row % F).any()):
                row = int((per_row % F).nonzero()[0])
                raise ValueError(
                    f"row {row} of input_ids holds {int(per_row[row])} image tokens, not a multiple of the "
                    f"{F} features of an image"
                )
        elif found == n:
            ids, mask, index = self._expand(input_ids, attention_mask, is_image)
        else:
            raise ValueError(
                f"input_ids hold {found} image tokens (id {c.image_token_id}) for {n} image(s); expected {n} (one per "
                f"image) or {n * F} (one per image feature, {F} per image)"
            )
        image = ids == c.image_token_id  # (B, L)
        embeds = self.llm.embed_tokens(ids.masked_fill(image, 0))  # (B, L, H)
        if pixel_values is not None and n:
            features = self.image_features(pixel_values).to(embeds.dtype)  # (N, F, H)
            embeds = embeds.masked_scatter(image[..., None], features)
        return _Prompt(ids, mask, embeds, index)

    def forward(
        self, pixel_values: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (N, 3, H, W) and prompts (B, T) -> next-token logits (B, T, V) at the positions
        of ``input_ids`` as given (an image token given once reads the logits after its last feature).
        Positions count the real tokens of ``attention_mask``."""
        return self.llm.logits(self.text_hidden_states(pixel_values, input_ids, attention_mask))

    def text_hidden_states(
        self, pixel_values: torch.Tensor | None, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The LLM's final hidden states (B, T, H) at the positions of ``input_ids`` as given (what
        ``forward`` turns into logits; :func:`vlkit.losses.lm.scored_lm_loss` runs the LM head on
        the scored positions of them only)."""
        prompt = self._prompt(pixel_values, input_ids, attention_mask)
        positions = None if prompt.mask is None else (prompt.mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = self.llm.hidden_states(
            attention_mask=prompt.mask, position_ids=positions, inputs_embeds=prompt.embeds
        )  # (B, L, H)
        if prompt.index is not None:
            hidden = hidden.gather(1, prompt.index[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, T, H)
        return hidden

    def _next_logits(
        self,
        new_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: KVCache,
        prompt_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoding step: the prompt's embeddings on the first call, new ids (N, 1) after
        -> logits of the last position (N, V)."""
        kw = dict(attention_mask=attention_mask, cache=cache, position_ids=position_ids)
        if prompt_embeds is not None:  # the first step
            hidden = self.llm.hidden_states(inputs_embeds=prompt_embeds, **kw)
        else:
            hidden = self.llm.hidden_states(new_ids, **kw)
        return self.llm.logits(hidden[:, -1])

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        max_new_tokens: int | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        streamer: Callable[[torch.Tensor], None] | None = None,
        **overrides,
    ) -> torch.Tensor:
        """Continue prompts (B, T) about images (N, 3, H, W) -> ``input_ids`` followed by the new
        tokens (B, T + new). Options as :meth:`vlkit.models.GPT.generate`; left-padded batches
        pass ``attention_mask``; ``eos_token_id`` and ``pad_token_id`` default to the LLM's.
        Lengths (``min_length``, the position limit) count image tokens expanded. ``streamer``
        (greedy and sampling) is called with each new token (B,) as soon as it is chosen."""
        if max_new_tokens is not None:
            overrides["max_new_tokens"] = max_new_tokens
        text = self.config.text
        config = resolve_generation_config(
            generation_config,
            overrides,
            default=GenerationConfig(),
            eos_token_id=text.eos_token_id,
            pad_token_id=getattr(text, "pad_token_id", None),
        )
        with eval_mode(self):
            prompt = self._prompt(pixel_values, input_ids, attention_mask)
            step = decoding_step(
                self._next_logits,
                text.num_layers,
                config,
                attention_mask=prompt.mask,
                first={"prompt_embeds": prompt.embeds},
            )
            if streamer is not None and config.num_beams > 1:
                raise ValueError("streamer works with greedy decoding and sampling, not beam search (num_beams > 1)")
            streaming = None if streamer is None else _Streaming(step, streamer)
            out = generate_tokens(
                step if streaming is None else streaming,
                prompt.ids,
                config,
                generator=generator,
                max_positions=text.max_positions,
            )
            if streaming is not None:
                for t in range(prompt.ids.shape[1] + streaming.sent, out.shape[1]):
                    streaming.streamer(out[:, t])  # the last token is chosen but never fed back
        return torch.cat([input_ids, out[:, prompt.ids.shape[1] :]], dim=1)


class _Streaming:
    """A decoding step that hands each chosen token (fed back as the next input) to ``streamer``."""

    def __init__(self, step: CachedStep, streamer: Callable[[torch.Tensor], None]) -> None:
        self.step, self.streamer, self.sent = step, streamer, 0

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        if self.step.cache.length:  # after the prompt: new_ids (B, 1) are the tokens just chosen
            self.streamer(new_ids[:, -1])
            self.sent += 1
        return self.step(new_ids)

    def reorder(self, index: torch.Tensor) -> None:
        self.step.reorder(index)


@register("vlm-tiny")
def vlm_tiny() -> VLMConfig:
    """For tests and CPU smoke runs: a 2-layer CLIP tower on 32-pixel images (16 patches) and
    gpt-tiny's decoder; id 999 is the image token."""
    return VLMConfig(
        vision=clip_vision_config(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=256),
        text=GPTConfig(
            vocab_size=1000,
            hidden_size=32,
            num_layers=2,
            num_heads=2,
            intermediate_size=128,
            max_positions=128,
            bos_token_id=0,
            eos_token_id=0,
        ),
        image_token_id=999,
    )


@register("vlm-shapes-tiny")
def vlm_shapes_tiny() -> VLMConfig:
    """For the VLM recipes' tests and the shapes demo: a 2-layer CLIP tower on 32-pixel images
    (16 patches) and a 2-layer Llama (GQA) sized for :func:`vlkit.data.conversations.conversation_tokenizer`
    (ids: pad 0, <s> 2, </s> 3, <image> 4)."""
    from .llama import LlamaConfig

    return VLMConfig(
        vision=clip_vision_config(image_size=32, patch_size=8, width=64, depth=2, num_heads=4, mlp_dim=256),
        text=LlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            max_positions=256,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        ),
        image_token_id=4,
    )
