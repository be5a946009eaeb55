"""ViLT: "Vision-and-Language Transformer Without Convolution or Region Supervision" (Kim et al. 2021).

The single-stream model of the architecture map: no image encoder to speak of (a linear patch
projection, as ViT's first layer) and no text encoder (BERT's embeddings); the text tokens and the
image patches, each with a modality-type embedding, run together through ONE stack of pre-norm
:class:`~vlkit.layers.Block` (the fusion module is the whole model). The sequence is text first
([CLS] words [SEP]), then the image [CLS] and the patches in their natural row-major order; a
pooler reads the first (text [CLS]) position.

Heads on top: image-text matching (ITM, 2-way, pre-training, on the pooled state), masked LM
(on the text positions, decoder tied to the word embeddings), VQA (a classifier over an answer
vocabulary, multi-label: soft scores and binary cross-entropy) and the retrieval rank head (one
score per pair). Every head is optional (config flags); HF transformers' ``ViltModel``,
``ViltForMaskedLM``, ``ViltForQuestionAnswering`` and ``ViltForImageAndTextRetrieval`` folders
load into it (:mod:`vlkit.convert.hf_vilt`). HF's ViLT visits the patches in a random order (it
samples them, even when it keeps them all); vlkit keeps them in order, which changes nothing but
the order of the image rows of the hidden states.

Images of another size than ``image_size`` get their patch position embeddings resampled
bilinearly (corners aligned), as ViLT does. A ``pixel_mask`` (B, H, W), 1 on real pixels, marks
images padded at the bottom and right: their padding patches are masked out of attention and the
position grid is resampled to each image's real extent, again as ViLT does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..layers import PatchEmbed, Transformer, build_attention_mask, resize_position_embedding
from .base import Model
from .bert import BertEmbeddings, MLMHead, init_weights
from .registry import register, register_family

VILT_MEAN = (0.5, 0.5, 0.5)
VILT_STD = (0.5, 0.5, 0.5)
TEXT_MODALITY, IMAGE_MODALITY = 0, 1


@dataclass(frozen=True)
class ViltConfig:
    model_type: ClassVar[str] = "vilt"
    vocab_size: int = 30522
    type_vocab_size: int = 2  # BERT segments of the text
    modality_type_vocab_size: int = 2  # 0 text, 1 image (2: a second image, NLVR2)
    max_positions: int = 40  # text positions
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    act: str = "gelu"
    norm_eps: float = 1e-12
    qkv_bias: bool = True
    dropout: float = 0.0
    attn_dropout: float = 0.0
    pad_token_id: int = 0
    image_size: int = 384
    patch_size: int = 32
    in_channels: int = 3
    itm_head: bool = True  # image-text matching on the pooled state (pre-training)
    mlm_head: bool = False  # masked LM on the text positions (pre-training)
    rank_head: bool = False  # retrieval score of a pair (ViltForImageAndTextRetrieval)
    answers: tuple[str, ...] = ()  # the VQA answer vocabulary; a classifier over it when given
    init_std: float = 0.02  # std of the normal init of linear and embedding weights
    # preprocessing (vlkit.image_transform): ViLT normalises with 0.5 and resizes bicubically
    image_mean: tuple[float, float, float] = VILT_MEAN
    image_std: tuple[float, float, float] = VILT_STD
    resize_mode: str = "squash"
    interpolation: str = "bicubic"
    grid_size: int = field(init=False)
    num_patches: int = field(init=False)

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.modality_type_vocab_size < 2:
            raise ValueError(
                f"modality_type_vocab_size must be >= 2 (text, image), got {self.modality_type_vocab_size}"
            )
        if len(set(self.answers)) != len(self.answers):
            raise ValueError("the VQA answers must be distinct")
        object.__setattr__(self, "grid_size", self.image_size // self.patch_size)
        object.__setattr__(self, "num_patches", self.grid_size**2)

    @property
    def num_answers(self) -> int:
        return len(self.answers)


class VQAHead(nn.Sequential):
    """ViLT's VQA classifier on the pooled state: Linear(H, 2H), LayerNorm, GELU, Linear(2H, A)."""

    def __init__(self, dim: int, num_answers: int) -> None:
        super().__init__(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.GELU(), nn.Linear(2 * dim, num_answers))


@register_family
class Vilt(Model[ViltConfig]):
    """``model(pixel_values, input_ids, attention_mask=None)`` -> fused states (B, T + 1 + N, H)
    after the final norm; ``pool``, and the heads ``itm_logits`` (B, 2), ``mlm_logits`` (B, T, V),
    ``vqa_logits`` (B, A), ``retrieval_scores`` (B,) of B (image, text) pairs."""

    config_class = ViltConfig

    def __init__(self, config: ViltConfig):
        super().__init__(config)
        c = config
        H = c.hidden_size
        self.text_embeddings = BertEmbeddings(
            c.vocab_size, c.type_vocab_size, c.max_positions, H, norm_eps=c.norm_eps, dropout=c.dropout
        )
        self.patch_embed = PatchEmbed(c.patch_size, c.in_channels, H)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, H))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, H))
        self.modality_embed = nn.Embedding(c.modality_type_vocab_size, H)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = Transformer(
            H,
            c.num_layers,
            c.num_heads,
            c.intermediate_size,
            norm_first=True,
            act=c.act,
            norm_eps=c.norm_eps,
            qkv_bias=c.qkv_bias,
            drop=c.dropout,
            attn_drop=c.attn_dropout,
        )
        self.norm = nn.LayerNorm(H, eps=c.norm_eps)
        self.pooler = nn.Linear(H, H)
        self.itm_head = nn.Linear(H, 2) if c.itm_head else None  # index 1 = matched
        self.mlm_head = MLMHead(H, c.vocab_size, act=c.act, norm_eps=c.norm_eps) if c.mlm_head else None
        self.vqa_head = VQAHead(H, c.num_answers) if c.answers else None
        self.rank_head = nn.Linear(H, 1) if c.rank_head else None
        self.apply(lambda m: init_weights(m, std=c.init_std))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    # ---- embeddings -----------------------------------------------------------------------
    def _positions(self, grid: tuple[int, int], pixel_mask: torch.Tensor | None, B: int) -> torch.Tensor:
        """Patch position embeddings (B or 1, gh * gw, H) for a patch grid; with a pixel mask
        (B, H_img, W_img) each image's grid is resampled to its real extent and zero elsewhere."""
        p = self.config.patch_size
        if pixel_mask is None:
            pos = resize_position_embedding(self.pos_embed, grid, mode="bilinear", align_corners=True)
            return pos[:, 1:]  # (1, N, H)
        gh, gw = grid
        valid = pixel_mask[:, ::p, ::p][:, :gh, :gw]  # (B, gh, gw): a patch is real if its first pixel is
        heights, widths = valid[:, :, 0].sum(1).tolist(), valid[:, 0, :].sum(1).tolist()
        out = self.pos_embed.new_zeros(B, gh, gw, self.pos_embed.shape[-1])
        for extent in set(zip(heights, widths)):
            h, w = int(extent[0]), int(extent[1])
            rows = [i for i in range(B) if (heights[i], widths[i]) == extent]
            if h and w:
                pos = resize_position_embedding(self.pos_embed, (h, w), mode="bilinear", align_corners=True)
                out[rows, :h, :w] = pos[:, 1:].reshape(1, h, w, -1)
        return out.flatten(1, 2)  # (B, N, H)

    def embed_image(
        self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 3, H, W) -> image tokens with [CLS], positions and modality embedding (B, 1 + N, H),
        and their mask (B, 1 + N) when a ``pixel_mask`` (B, H, W) is given, else None."""
        x = self.patch_embed(pixel_values)  # (B, N, H)
        B = x.shape[0]
        p = self.config.patch_size
        grid = (pixel_values.shape[2] // p, pixel_values.shape[3] // p)
        if pixel_mask is not None and pixel_mask.shape != (B, *pixel_values.shape[2:]):
            raise ValueError(
                f"pixel_mask must be (B, H, W) = {(B, *pixel_values.shape[2:])}, got {tuple(pixel_mask.shape)}"
            )
        x = x + self._positions(grid, pixel_mask, B)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # (B, 1, H)
        x = torch.cat([cls, x], dim=1) + self.modality_embed.weight[IMAGE_MODALITY]
        mask = None
        if pixel_mask is not None:
            patches = pixel_mask[:, ::p, ::p][:, : grid[0], : grid[1]].flatten(1)  # (B, N)
            mask = torch.cat([patches.new_ones(B, 1), patches], dim=1)  # (B, 1 + N)
        return self.drop(x), mask

    def embed_text(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> BERT embeddings plus the text modality embedding (B, T, H)."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        return self.text_embeddings(input_ids, token_type_ids) + self.modality_embed.weight[TEXT_MODALITY]

    # ---- the joint encoder ----------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        token_type_ids: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused states after the final norm (B, T + 1 + N, H): the T text positions, then the
        image [CLS] and the N patches. ``attention_mask`` (B, T): 1 for real text tokens."""
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"ViLT reads pairs: got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts")
        text = self.embed_text(input_ids, token_type_ids)  # (B, T, H)
        image, image_mask = self.embed_image(pixel_values, pixel_mask)  # (B, 1 + N, H)
        x = torch.cat([text, image], dim=1)  # (B, T + 1 + N, H)
        mask = None
        if attention_mask is not None or image_mask is not None:
            B, T, S = text.shape[0], text.shape[1], image.shape[1]
            text_mask = attention_mask if attention_mask is not None else input_ids.new_ones(B, T)
            image_mask = image_mask if image_mask is not None else input_ids.new_ones(B, S)
            keys = torch.cat([text_mask.to(input_ids.device).long(), image_mask.long()], dim=1)  # (B, T + S)
            mask = build_attention_mask(keys, T + S, T + S)
        return self.norm(self.encoder(x, attn_mask=mask))

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """tanh(W h_0), the first (text [CLS]) position: (B, L, H) -> (B, H)."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    # ---- heads ----------------------------------------------------------------------------
    def _head(self, name: str) -> nn.Module:
        head = getattr(self, name)
        if head is None:
            flag = "answers" if name == "vqa_head" else name
            raise ValueError(f"this ViLT has no {name.replace('_', ' ')} (config.{flag} is not set)")
        return head

    def match_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """ITM head on the pooled state: (B, L, H) -> (B, 2) (not matched, matched)."""
        return self._head("itm_head")(self.pool(hidden))

    def itm_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image-text matching logits of B pairs (B, 2): (not matched, matched), the signature every
        fusion model shares (BLIP, ALBEF)."""
        head = self._head("itm_head")
        return head(self.pool(self(pixel_values, input_ids, attention_mask, pixel_mask=pixel_mask)))

    def match(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Probability (B,) that image i and text i match."""
        return self.itm_logits(pixel_values, input_ids, attention_mask).softmax(-1)[:, 1]

    def text_logits(self, hidden: torch.Tensor, num_text: int) -> torch.Tensor:
        """MLM head on the first ``num_text`` positions of fused states: (B, L, H) -> (B, T, V)."""
        head = self._head("mlm_head")
        return head(hidden[:, :num_text], self.text_embeddings.tokens.weight)

    def mlm_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vocabulary logits at the text positions (B, T, V), the text read with the image."""
        self._head("mlm_head")
        hidden = self(pixel_values, input_ids, attention_mask, pixel_mask=pixel_mask)
        return self.text_logits(hidden, input_ids.shape[1])

    def answer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """VQA classifier on the pooled state: (B, L, H) -> (B, A), one logit per answer (sigmoid scores)."""
        return self._head("vqa_head")(self.pool(hidden))

    def vqa_logits(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Answer logits (B, A) of B (image, question) pairs, over ``config.answers``."""
        head = self._head("vqa_head")
        return head(self.pool(self(pixel_values, input_ids, attention_mask, pixel_mask=pixel_mask)))

    def answer(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> list[str]:
        """The best-scored answer of ``config.answers`` to each of B questions."""
        best = self.vqa_logits(pixel_values, input_ids, attention_mask).argmax(-1)  # (B,)
        return [self.config.answers[i] for i in best.tolist()]

    def retrieval_scores(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Rank-head score (B,) of B (image, text) pairs, higher = better match."""
        head = self._head("rank_head")
        return head(self.pool(self(pixel_values, input_ids, attention_mask, pixel_mask=pixel_mask))).squeeze(-1)


def with_answers(model: Vilt, answers: tuple[str, ...]) -> Vilt:
    """A copy of ``model`` with a freshly initialised VQA head over ``answers`` (ViLT's VQA fine-tuning
    starts so from the pre-trained model); every other weight is the model's."""
    new = Vilt(dataclasses.replace(model.config, answers=tuple(answers)))
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("vqa_head.")}
    missing, unexpected = new.load_state_dict(kept, strict=False)
    if unexpected or any(not k.startswith("vqa_head.") for k in missing):
        raise ValueError(f"with_answers: weights do not fit ({sorted(unexpected)[:5]}, {sorted(missing)[:5]})")
    new.tokenizer = model._tokenizer
    return new.train(model.training)


@register("vilt-b32")
def vilt_b32() -> ViltConfig:
    """ViLT-B/32 pre-training (dandelin/vilt-b32-mlm): ITM and MLM heads, 384 px in 32 px patches."""
    return ViltConfig(mlm_head=True)


@register("vilt-tiny")
def vilt_tiny() -> ViltConfig:
    """A ViLT for tests and CPU runs: 32 px images in 8 px patches, width 32, 2 layers."""
    return ViltConfig(
        vocab_size=1000,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        mlm_head=True,
        init_std=0.1,  # tiny widths learn from 0.1 where BERT's 0.02 leaves ITM at chance (as albef-tiny)
    )
