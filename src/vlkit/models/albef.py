"""ALBEF: "Align before Fuse" (Li et al. 2021).

A ViT image encoder and a BERT whose first layers encode the text alone and whose last layers
(the fusion encoder) also cross-attend to the image tokens. Linear projections of the two [CLS]
states give the normalised features of the image-text contrastive loss (ITC); the fused [CLS]
state feeds the image-text matching head (ITM); the fused token states feed the masked-LM head.

For momentum distillation the model keeps an exponential moving average ("momentum") copy of
every encoder and projection, and two queues of the momentum model's recent image and text
features (plus the ids they belong to) that serve as extra contrastive negatives.

The model computes features; the losses are in :mod:`vlkit.losses` and their combination in
:mod:`vlkit.tasks.albef`. ALBEF has no transformers checkpoint format: its checkpoints are vlkit
folders (``save_pretrained``), momentum copy and queues included so that training can resume.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import CLIP_MEAN, CLIP_STD
from ..layers import build_attention_mask
from .base import Model, check_towers
from .bert import BertEmbeddings, BertTextFields, MLMHead, bert_encoder, init_weights
from .registry import register, register_family
from .vit import ViT, ViTConfig

# ALBEF's image encoder: a timm-style ViT-B/16 (LayerNorm eps 1e-6) at 256 px, images squashed bicubically.
albef_vision_config = partial(
    ViTConfig, image_size=256, norm_eps=1e-6, image_mean=CLIP_MEAN, image_std=CLIP_STD, interpolation="bicubic"
)


@dataclass(frozen=True)
class ALBEFTextConfig(BertTextFields):
    """The BERT text + fusion encoder: ``text_layers`` self-attention layers, then
    ``fusion_layers`` layers that also cross-attend to the image."""

    text_layers: int = 6
    fusion_layers: int = 6
    type_vocab_size: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.text_layers < 1 or self.fusion_layers < 1:
            raise ValueError(
                f"ALBEF needs at least one text and one fusion layer, got "
                f"text_layers={self.text_layers}, fusion_layers={self.fusion_layers}"
            )


@dataclass(frozen=True)
class ALBEFConfig:
    model_type: ClassVar[str] = "albef"
    vision: ViTConfig = field(default_factory=albef_vision_config)
    text: ALBEFTextConfig = field(default_factory=ALBEFTextConfig)
    embed_dim: int = 256  # ITC feature size
    temperature: float = 0.07  # initial ITC temperature (learned)
    # scale() = 1 / temperature, clamped to [1 / max_logit_scale, 0.5]: at most 100 as CLIP (ALBEF: 1000)
    max_logit_scale: float = 100.0
    mlm_head: bool = True
    momentum: float = 0.995  # EMA factor of the momentum encoders; 0 disables the momentum copy
    queue_size: int = 65536  # momentum features kept as extra ITC negatives (0: none)
    # std of the normal init of linear and embedding weights (BERT's 0.02 suits width 768; tiny
    # widths need more for attention to matter at the start of training from scratch)
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_towers(self, ViTConfig, ALBEFTextConfig)
        if self.max_logit_scale < 2.0:
            raise ValueError(f"max_logit_scale must be >= 2 (temperature <= 0.5), got {self.max_logit_scale}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {self.queue_size}")
        if self.queue_size and not self.momentum:
            raise ValueError("the feature queues hold momentum features: queue_size > 0 needs momentum > 0")


class ALBEFEncoders(nn.Module):
    """Everything ALBEF keeps a momentum copy of: image encoder, text/fusion encoder, the two ITC
    projections and the MLM head."""

    def __init__(self, config: ALBEFConfig):
        super().__init__()
        v, t = config.vision, config.text
        self.num_text_layers = t.text_layers
        self.visual = ViT(v)
        self.vision_proj = nn.Linear(v.width, config.embed_dim)
        self.text_embeddings = BertEmbeddings(
            t.vocab_size, t.type_vocab_size, t.max_positions, t.hidden_size, norm_eps=t.norm_eps, dropout=t.dropout
        )
        depth = t.text_layers + t.fusion_layers
        self.text_encoder = bert_encoder(
            t, depth, cross_attention_layers=range(t.text_layers, depth), context_dim=v.width
        )
        self.text_proj = nn.Linear(t.hidden_size, config.embed_dim)
        self.mlm_head = (
            MLMHead(t.hidden_size, t.vocab_size, act=t.act, norm_eps=t.norm_eps) if config.mlm_head else None
        )
        for name, module in self.named_children():
            if name != "visual" or config.init_std != 0.02:  # the ViT initialises itself with 0.02
                module.apply(lambda m: init_weights(m, std=config.init_std))

    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> image tokens (B, 1 + N, Cv)."""
        return self.visual.encode(pixel_values)

    def text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> text-only hidden states (B, T, H) from the first ``text_layers`` layers."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        x = self.text_embeddings(input_ids)  # (B, T, H)
        mask = None if attention_mask is None else build_attention_mask(attention_mask, T, T)
        for block in self.text_encoder.blocks[: self.num_text_layers]:
            x = block(x, attn_mask=mask)
        return x

    def fuse(
        self,
        text_hidden: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text states (B, T, H) through the fusion layers, cross-attending to the image tokens
        (B, S, Cv) -> fused states (B, T, H). ``image_mask`` (B, S): 1 for real image tokens."""
        if text_hidden.shape[0] != image_embeds.shape[0]:
            raise ValueError(f"text batch {text_hidden.shape[0]} != image batch {image_embeds.shape[0]}")
        T, S = text_hidden.shape[1], image_embeds.shape[1]
        mask = None if attention_mask is None else build_attention_mask(attention_mask, T, T)
        context_mask = None if image_mask is None else build_attention_mask(image_mask, T, S)
        x = text_hidden
        for block in self.text_encoder.blocks[self.num_text_layers :]:
            x = block(x, attn_mask=mask, context=image_embeds, context_mask=context_mask)
        return x

    def image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """Normalised ITC feature of the image [CLS]: (B, 1 + N, Cv) -> (B, D)."""
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def text_features(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """Normalised ITC feature of the text [CLS]: (B, T, H) -> (B, D)."""
        return F.normalize(self.text_proj(text_hidden[:, 0]), dim=-1)

    def mlm_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """Fused states (B, T, H) -> vocabulary logits (B, T, V)."""
        if self.mlm_head is None:
            raise ValueError("this ALBEF has no MLM head (config.mlm_head=False)")
        return self.mlm_head(fused, self.text_embeddings.tokens.weight)

    def features(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """What :meth:`ALBEF.forward` returns, from these encoders (online or momentum)."""
        image_embeds = self.image_embeds(pixel_values)  # (B, 1 + N, Cv)
        text_hidden = self.text_embeds(input_ids, attention_mask)  # (B, T, H)
        out = {
            "image_embeds": image_embeds,
            "text_hidden": text_hidden,
            "image_features": self.image_features(image_embeds),
            "text_features": self.text_features(text_hidden),
        }
        if mlm_input_ids is not None:
            masked = self.text_embeds(mlm_input_ids, attention_mask)  # (B, T, H)
            out["mlm_logits"] = self.mlm_logits(self.fuse(masked, attention_mask, image_embeds))  # (B, T, V)
        return out


@register_family
class ALBEF(Model[ALBEFConfig]):
    """Online encoders, ITM head and learned temperature; the momentum encoders and feature
    queues when ``config.momentum > 0``.

    The momentum parameters never receive gradients (``requires_grad=False``); update them with
    :meth:`momentum_update` once per training step and push the momentum features of each
    (all-rank) batch with :meth:`enqueue`.
    """

    config_class = ALBEFConfig
    momentum_encoders: ALBEFEncoders | None
    image_queue: torch.Tensor  # (K, D) buffers: momentum features kept as extra negatives
    text_queue: torch.Tensor
    id_queue: torch.Tensor  # (K,) image ids of the queued features
    queue_ptr: torch.Tensor  # () where the next batch is written

    def __init__(self, config: ALBEFConfig):
        super().__init__(config)
        c = config
        self.encoders = ALBEFEncoders(c)
        self.itm_head = nn.Linear(c.text.hidden_size, 2)  # index 1 = matched
        init_weights(self.itm_head, std=c.init_std)
        self.temp = nn.Parameter(torch.tensor(float(c.temperature)))
        if c.momentum > 0:
            self.momentum_encoders = copy.deepcopy(self.encoders)
            self.momentum_encoders.requires_grad_(False)
        else:
            self.momentum_encoders = None
        K, D = c.queue_size, c.embed_dim
        # ALBEF starts its queues with random unit vectors (they serve as negatives at once) and
        # ids -100 that match no real id
        self.register_buffer("image_queue", F.normalize(torch.randn(K, D), dim=1))
        self.register_buffer("text_queue", F.normalize(torch.randn(K, D), dim=1))
        self.register_buffer("id_queue", torch.full((K,), -100, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # ---- towers ---------------------------------------------------------------------------
    def towers(self, momentum: bool = False) -> ALBEFEncoders:
        """The online encoders, or the momentum copy."""
        if not momentum:
            return self.encoders
        if self.momentum_encoders is None:
            raise ValueError("this ALBEF has no momentum encoders (config.momentum=0)")
        return self.momentum_encoders

    def scale(self) -> torch.Tensor:
        """1 / temperature, the temperature clamped to [1 / max_logit_scale, 0.5].

        ALBEF's code clamps it to [0.001, 0.5], so the scale can reach 1000; on a memorised batch
        that makes the ITC loss jump from ~0 to hundreds after a small step. The default bound is
        CLIP's (100); ``max_logit_scale=1000`` restores ALBEF's."""
        return 1.0 / self.temp.clamp(1.0 / self.config.max_logit_scale, 0.5)

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False, momentum: bool = False) -> torch.Tensor:
        """(B, 3, H, W) -> ITC image feature (B, D), the projected [CLS] state."""
        towers = self.towers(momentum)
        f = towers.vision_proj(towers.image_embeds(pixel_values)[:, 0])
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        normalize: bool = False,
        momentum: bool = False,
    ) -> torch.Tensor:
        """(B, T) ids -> ITC text feature (B, D), the projected text-only [CLS] state."""
        towers = self.towers(momentum)
        f = towers.text_proj(towers.text_embeds(input_ids, attention_mask)[:, 0])
        return F.normalize(f, dim=-1) if normalize else f

    def match_logits(self, fused_hidden: torch.Tensor) -> torch.Tensor:
        """ITM head on the fused [CLS] state: (B, T, H) -> (B, 2) (not matched, matched), as
        :meth:`vlkit.models.Blip.match_logits`; fuse with ``encoders.fuse``."""
        return self.itm_head(fused_hidden[:, 0])

    def itm_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image-text matching logits of B pairs (B, 2): (not matched, matched), the signature
        every fusion model shares (BLIP, ALBEF)."""
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"itm_logits scores pairs: got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts"
            )
        e = self.encoders
        text_hidden = e.text_embeds(input_ids, attention_mask)  # (B, T, H)
        return self.match_logits(e.fuse(text_hidden, attention_mask, e.image_embeds(pixel_values)))

    def match(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Probability (B,) that image i and text i match."""
        return self.itm_logits(pixel_values, input_ids, attention_mask).softmax(-1)[:, 1]

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features of the online model for the pre-training objectives (losses live in
        vlkit.losses): ``image_embeds`` (B, 1 + N, Cv), ``text_hidden`` (B, T, H) (text-only
        layers), normalised ITC ``image_features`` / ``text_features`` (B, D), and with
        ``mlm_input_ids`` (B, T) (masked text) ``mlm_logits`` (B, T, V) of the masked text fused
        with the image."""
        return self.encoders.features(pixel_values, input_ids, attention_mask, mlm_input_ids)

    @torch.no_grad()
    def momentum_features(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The same features from the momentum encoders (no gradients): the distillation targets."""
        out = self.towers(momentum=True).features(pixel_values, input_ids, attention_mask, mlm_input_ids)
        return {k: v for k, v in out.items() if k not in ("image_embeds", "text_hidden")}

    # ---- momentum distillation state ------------------------------------------------------
    @torch.no_grad()
    def momentum_update(self, momentum: float | None = None) -> None:
        """EMA step of every momentum parameter: ``p_m <- m * p_m + (1 - m) * p``."""
        m = self.config.momentum if momentum is None else momentum
        target: list[torch.Tensor] = list(self.towers(momentum=True).parameters())
        source: list[torch.Tensor] = list(self.encoders.parameters())
        torch._foreach_lerp_(target, source, 1.0 - m)  # p_m + (1 - m) (p - p_m)

    @torch.no_grad()
    def enqueue(
        self, image_features: torch.Tensor, text_features: torch.Tensor, ids: torch.Tensor | None = None
    ) -> None:
        """Write a batch of momentum features (B, D) (gathered over all ranks, so that every rank
        keeps the same queues) at the queue pointer, wrapping around; the oldest entries go.
        ``ids`` (B,) are the image ids the features belong to (-100 when not given)."""
        K = self.config.queue_size
        if K == 0:
            return
        n = image_features.shape[0]
        if text_features.shape[0] != n or (ids is not None and ids.shape[0] != n):
            raise ValueError(f"enqueue needs as many text features and ids as image features ({n})")
        if ids is None:
            ids = torch.full((n,), -100, dtype=torch.long, device=image_features.device)
        start = self.queue_ptr
        if n > K:  # only the newest K survive; they land where sequential writes would put them
            image_features, text_features, ids = image_features[-K:], text_features[-K:], ids[-K:]
            start = start + (n - K)
        index = (start + torch.arange(min(n, K), device=self.queue_ptr.device)) % K  # (min(n, K),)
        self.image_queue.index_copy_(0, index, image_features.detach().to(self.image_queue.dtype))
        self.text_queue.index_copy_(0, index, text_features.detach().to(self.text_queue.dtype))
        self.id_queue.index_copy_(0, index, ids.to(self.id_queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + n) % K)


@register("albef-base")
def albef_base() -> ALBEFConfig:
    """ViT-B/16 at 256 px, BERT-base with 6 text + 6 fusion layers, 256-d ITC features."""
    return ALBEFConfig()


@register("albef-tiny")
def albef_tiny() -> ALBEFConfig:
    """A CPU-sized ALBEF for tests and the synthetic data: 32-px images, width 32, 1 + 1 text
    layers, BERT's vocabulary; no dropout and a wider init (std 0.1) so that it starts learning
    from scratch within a few dozen steps."""
    return ALBEFConfig(
        vision=albef_vision_config(image_size=32, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64),
        text=ALBEFTextConfig(
            hidden_size=32,
            text_layers=1,
            fusion_layers=1,
            num_heads=2,
            intermediate_size=64,
            max_positions=64,
            dropout=0.0,
            attn_dropout=0.0,
        ),
        embed_dim=32,
        queue_size=256,
        init_std=0.1,
    )
