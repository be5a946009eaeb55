"""BLIP (Li et al. 2022): a ViT image encoder and a multimodal mixture of encoder-decoder (MED).

The MED runs in four modes:

1. unimodal image encoder: the ViT; its [CLS] token (after the final norm) is the global image
   feature, projected by ``vision_proj`` for image-text contrast (ITC);
2. unimodal text encoder: BERT-style post-norm blocks with the cross-attention skipped; the
   first token's state, projected by ``text_proj``, is the text feature for ITC;
3. image-grounded text encoder: the same blocks with cross-attention to the image tokens
   between self-attention and feed-forward in every layer; the first token ([ENC] in BLIP's
   training) summarises the pair for the image-text matching (ITM) head;
4. image-grounded text decoder: causal self-attention, cross-attention to the image, and an
   LM head like BERT's MLM head; sequences start with [DEC] (``bos_token_id``) and end with
   [SEP] (``sep_token_id``).

As in BLIP's pre-training, ``share_encoder_decoder=True`` makes encoder and decoder share every
weight except the self-attention sub-layers. HF checkpoints store ``text_encoder`` and
``text_decoder`` apart, so loaded models have two unshared towers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import BLIP_VISION
from ..layers import KVCache, build_attention_mask, decoder_mask
from ..runtime import eval_mode
from .base import Model, check_towers
from .bert import BertEmbeddings, BertTextFields, MLMHead, bert_encoder, init_weights
from .generation import decoding_step, generate_tokens
from .generation_config import GenerationConfig, resolve_generation_config
from .registry import register, register_family
from .vit import ViT, ViTConfig

# BLIP's image encoder: ViT-B/16 at 384 px unless overridden: patch bias, no pre-norm, final
# LayerNorm over all tokens; images squashed bicubically, CLIP mean/std.
blip_vision_config = partial(ViTConfig, **BLIP_VISION)


@dataclass(frozen=True)
class BlipTextConfig(BertTextFields):
    vocab_size: int = 30524  # bert-base-uncased + [DEC] + [ENC]
    num_layers: int = 12
    dropout: float = 0.0
    attn_dropout: float = 0.0
    pad_token_id: int = 0
    bos_token_id: int = 30522  # [DEC]: first token of every decoded sequence
    sep_token_id: int = 102  # [SEP]: ends captions and answers
    enc_token_id: int = 30523  # [ENC]: BLIP's first token for the image-grounded encoder (ITM)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pad_token_id", "bos_token_id", "sep_token_id", "enc_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(f"{name}={getattr(self, name)} is outside the vocabulary of {self.vocab_size}")


@dataclass(frozen=True)
class BlipConfig:
    model_type: ClassVar[str] = "blip"
    vision: ViTConfig = field(default_factory=blip_vision_config)
    text: BlipTextConfig = field(default_factory=BlipTextConfig)
    embed_dim: int = 256  # ITC feature size
    text_encoder: bool = True  # modes 2 and 3 (ITC text side, ITM, VQA question)
    text_decoder: bool = True  # mode 4 (captions, VQA answers)
    retrieval_heads: bool = True  # vision_proj, text_proj, itm_head, temp
    share_encoder_decoder: bool = False  # BLIP pre-training: share all but self-attention
    # what the decoder cross-attends to: "image" (captioning, pre-training) or "question" (VQA:
    # the question encoded with the image by the text encoder)
    decoder_context: str = "image"
    init_temperature: float = 0.07  # ITC temperature at init
    # scale() = 1 / temp, temp clamped to [1 / max_logit_scale, 0.5]: at most 100 as CLIP (BLIP: 1000)
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        check_towers(self, ViTConfig, BlipTextConfig)
        if self.max_logit_scale < 2.0:
            raise ValueError(f"max_logit_scale must be >= 2 (temp <= 0.5), got {self.max_logit_scale}")
        if not (self.text_encoder or self.text_decoder):
            raise ValueError("BlipConfig needs text_encoder or text_decoder (or both)")
        if self.retrieval_heads and not self.text_encoder:
            raise ValueError("retrieval_heads read the text encoder: set text_encoder=True")
        if self.share_encoder_decoder and not (self.text_encoder and self.text_decoder):
            raise ValueError("share_encoder_decoder needs both text_encoder and text_decoder")
        if self.decoder_context not in ("image", "question"):
            raise ValueError(f"decoder_context must be 'image' or 'question', got {self.decoder_context!r}")
        if self.decoder_context == "question" and not self.text_encoder:
            raise ValueError("decoder_context='question' reads the text encoder: set text_encoder=True")
        if self.decoder_context == "question" and self.share_encoder_decoder:
            raise ValueError(
                "share_encoder_decoder shares the cross-attention to the image: use decoder_context='image'"
            )


class BlipTextTransformer(nn.Module):
    """BERT embeddings (tokens + positions, no segments) and post-norm blocks that each
    cross-attend to a context (image tokens or an encoded question) when one is given."""

    def __init__(self, c: BlipTextConfig, context_dim: int):
        super().__init__()
        self.embeddings = BertEmbeddings(
            c.vocab_size, 0, c.max_positions, c.hidden_size, norm_eps=c.norm_eps, dropout=c.dropout
        )
        self.transformer = bert_encoder(c, c.num_layers, cross_attention_layers=True, context_dim=context_dim)

    def embed(self, input_ids: torch.Tensor, offset: int = 0, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:
            return self.embeddings(input_ids, offset=offset)  # (B, T, H)
        e = self.embeddings
        return e.drop(e.norm(e.tokens(input_ids) + e.positions(input_ids.shape[1], position_ids=position_ids)))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T) -> hidden states (B, T, H). ``attention_mask`` (B, past + T) and
        ``context_mask`` (B, S): 1 for real tokens; ``context`` (B, S, Cc) turns cross-attention on."""
        if input_ids.dim() != 2:
            raise ValueError(f"expected input_ids of shape (B, T), got {tuple(input_ids.shape)}")
        T = input_ids.shape[1]
        past = 0 if cache is None or position_ids is not None else cache.length  # (a static step gives positions)
        x = self.embed(input_ids, past, position_ids)  # (B, T, H)
        mask, is_causal = None, False
        if causal:
            mask, is_causal = decoder_mask(attention_mask, T, cache, device=x.device)
        elif attention_mask is not None:
            past = 0 if cache is None else cache.length
            mask = build_attention_mask(attention_mask, T, past + T, past=past, device=x.device)
        cmask = None
        if context is not None and context_mask is not None:
            cmask = build_attention_mask(context_mask, T, context.shape[1])  # (B, 1, 1, S)
        return self.transformer(
            x, attn_mask=mask, is_causal=is_causal, context=context, context_mask=cmask, cache=cache
        )


@register_family
class Blip(Model[BlipConfig]):
    """BLIP: ``vision`` (ViT), ``text_encoder`` / ``text_decoder`` (:class:`BlipTextTransformer`),
    ``lm_head``, ``vision_proj`` / ``text_proj`` / ``itm_head`` and the ITC temperature ``temp``;
    which of them exist is set by the config."""

    config_class = BlipConfig
    # the parts a config leaves out are None
    text_encoder: BlipTextTransformer | None
    text_decoder: BlipTextTransformer | None
    lm_head: MLMHead | None
    vision_proj: nn.Linear | None
    text_proj: nn.Linear | None
    itm_head: nn.Linear | None
    temp: nn.Parameter | None

    def __init__(self, config: BlipConfig):
        super().__init__(config)
        c, t, v = config, config.text, config.vision
        self.vision = ViT(v)
        self.text_encoder = BlipTextTransformer(t, v.width) if c.text_encoder else None
        decoder_context_dim = v.width if c.decoder_context == "image" else t.hidden_size
        self.text_decoder = BlipTextTransformer(t, decoder_context_dim) if c.text_decoder else None
        self.lm_head = MLMHead(t.hidden_size, t.vocab_size, act=t.act, norm_eps=t.norm_eps) if c.text_decoder else None
        if c.retrieval_heads:
            self.vision_proj = nn.Linear(v.width, c.embed_dim)
            self.text_proj = nn.Linear(t.hidden_size, c.embed_dim)
            self.itm_head = nn.Linear(t.hidden_size, 2)
            self.temp = nn.Parameter(torch.tensor(float(c.init_temperature)))
        else:
            self.vision_proj = self.text_proj = self.itm_head = self.temp = None
        for part in (
            self.text_encoder,
            self.text_decoder,
            self.lm_head,
            self.vision_proj,
            self.text_proj,
            self.itm_head,
        ):
            if part is not None:
                part.apply(init_weights)
        enc, dec = self.text_encoder, self.text_decoder
        if c.share_encoder_decoder and enc is not None and dec is not None:  # (the config requires both)
            dec.embeddings = enc.embeddings
            for e, d in zip(enc.transformer.blocks, dec.transformer.blocks):
                d.cross_attn, d.norm_cross, d.mlp, d.norm2 = e.cross_attn, e.norm_cross, e.mlp, e.norm2

    def _non_persistent_ok(self) -> set[str]:
        return {"temp"}  # HF checkpoints have no ITC temperature; the init value stays

    def _require(self, part: str) -> Any:  # the part (typed by its annotation above), never None
        module = getattr(self, part)
        if module is None:
            raise ValueError(
                f"this BLIP has no {part} (config: text_encoder={self.config.text_encoder}, "
                f"text_decoder={self.config.text_decoder}, retrieval_heads={self.config.retrieval_heads})"
            )
        return module

    def _require_vqa(self) -> None:
        self._require("text_decoder")
        if self.config.decoder_context != "question":
            raise ValueError("this BLIP's decoder reads the image (a captioning model): use generate()")

    # --- the four modes -------------------------------------------------------------------
    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Mode 1: (B, 3, H, W) -> image tokens after the final norm (B, 1 + N, Cv)."""
        return self.vision.encode(pixel_values)

    def text_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mode 2, unimodal text encoder: (B, T) -> (B, T, H)."""
        return self._require("text_encoder")(input_ids, attention_mask)

    def fused_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mode 3, image-grounded text encoder: ids (B, T) and image tokens (B, S, Cv) -> (B, T, H)."""
        return self._require("text_encoder")(input_ids, attention_mask, context=image_embeds, context_mask=image_mask)

    def decoder_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mode 4, image-grounded causal decoder: ids (B, T), context (B, S, Cc) -> (B, T, H)."""
        return self._require("text_decoder")(
            input_ids, attention_mask, context=context, context_mask=context_mask, causal=True
        )

    def lm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder states (..., H) -> next-token logits (..., V); the head is tied to the decoder's
        token embedding."""
        decoder = self._require("text_decoder")
        return self._require("lm_head")(hidden, decoder.embeddings.tokens.weight)

    def decoder_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> next-token logits (B, T, V): position t predicts token t + 1."""
        return self.lm_logits(self.decoder_hidden(input_ids, attention_mask, context, context_mask))

    # --- ITC / ITM --------------------------------------------------------------------------
    def image_feature(self, image_embeds: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 1 + N, Cv) image tokens -> ITC feature of [CLS] (B, D)."""
        f = self._require("vision_proj")(image_embeds[:, 0])
        return F.normalize(f, dim=-1) if normalize else f

    def text_feature(self, text_hidden: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, T, H) unimodal text states -> ITC feature of the first token (B, D)."""
        f = self._require("text_proj")(text_hidden[:, 0])
        return F.normalize(f, dim=-1) if normalize else f

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """(B, 3, H, W) -> projected ITC image features (B, D)."""
        return self.image_feature(self.image_embeds(pixel_values), normalize)

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        """(B, T) ids -> projected ITC text features (B, D)."""
        return self.text_feature(self.text_hidden(input_ids, attention_mask), normalize)

    def scale(self) -> torch.Tensor:
        """The ITC inverse temperature 1 / temp, temp clamped to [1 / max_logit_scale, 0.5].

        BLIP's code clamps temp to [0.001, 0.5], so the scale can reach 1000; at that scale a
        memorised batch gives logits of +-1000 and a step that moves one feature a little turns
        the loss from ~0 to hundreds (seen on tiny data). The default bound is CLIP's (100);
        ``max_logit_scale=1000`` restores BLIP's. Loaded HF checkpoints have no temp (it stays
        at ``init_temperature``), so this changes no converted output."""
        if self.temp is None:
            raise ValueError("this BLIP has no ITC temperature (config.retrieval_heads=False)")
        return 1.0 / self.temp.clamp(1.0 / self.config.max_logit_scale, 0.5)

    def match_logits(self, fused_hidden: torch.Tensor) -> torch.Tensor:
        """ITM head on the first fused token: (B, T, H) -> (B, 2) (not matched, matched)."""
        return self._require("itm_head")(fused_hidden[:, 0])

    def itm_logits(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image-text matching logits of B pairs (B, 2): (not matched, matched). The ids are used
        as given (transformers does not swap [CLS] for [ENC]; BLIP's own code does)."""
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"itm_logits scores pairs: got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts"
            )
        return self.match_logits(self.fused_hidden(input_ids, attention_mask, self.image_embeds(pixel_values)))

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Features for the pre-training objectives (losses live in vlkit.losses): ``image_embeds``
        (B, 1 + N, Cv); with retrieval heads ``image_features`` / ``text_features`` (B, D,
        un-normalised); with a decoder and ``decoder_input_ids`` ``lm_logits`` (B, T', V), the decoder
        reading the image, or for VQA models the question ``input_ids`` encoded with the image."""
        image = self.image_embeds(pixel_values)
        out = {"image_embeds": image}
        if self.config.retrieval_heads:
            out["image_features"] = self.image_feature(image)
            out["text_features"] = self.text_feature(self.text_hidden(input_ids, attention_mask))
        if decoder_input_ids is not None:
            if self.config.decoder_context == "image":
                out["lm_logits"] = self.decoder_logits(decoder_input_ids, decoder_attention_mask, image)
            else:  # VQA: input_ids is the question, decoder_input_ids the answer
                question = self.fused_hidden(input_ids, attention_mask, image)
                out["lm_logits"] = self.decoder_logits(
                    decoder_input_ids, decoder_attention_mask, question, attention_mask
                )
        return out

    # --- inference --------------------------------------------------------------------------
    def _next_logits(
        self,
        new_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: KVCache,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The decoding step: new ids (N, t) on the decoder's cache -> logits of the last position
        (N, V). Cross-attention K/V over ``context`` are computed at the first step, then read
        from the cache (which reorders them with the beams)."""
        hidden = self._require("text_decoder")(
            new_ids,
            attention_mask,
            context=context,
            context_mask=context_mask,
            causal=True,
            cache=cache,
            position_ids=position_ids,
        )  # (N, t, H)
        return self.lm_logits(hidden[:, -1])  # (N, V)

    def _decode(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        context: torch.Tensor,
        config: GenerationConfig,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Decode after ``ids`` (B, T) ([DEC] and any prompt), cross-attending to ``context`` (B, S, Cc)."""
        t = self.config.text
        step = decoding_step(
            self._next_logits, t.num_layers, config, attention_mask=mask, context=context, context_mask=None
        )
        return generate_tokens(step, ids, config, generator=generator, max_positions=t.max_positions)

    def _generation_config(
        self, generation_config: GenerationConfig | None, overrides: dict, default: GenerationConfig
    ) -> GenerationConfig:
        t = self.config.text  # captions and answers end with [SEP] and are padded with [PAD]
        return resolve_generation_config(
            generation_config, overrides, default=default, eos_token_id=t.sep_token_id, pad_token_id=t.pad_token_id
        )

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
        """Caption images (B, 3, H, W) -> token ids (B, L): [DEC], the prompt, the caption, [SEP],
        padding. Options come from ``generation_config`` (default: 20 new tokens, greedy) with
        keyword ``overrides`` on top (``num_beams=3``, ``min_length=5``, ``do_sample=True``, ...).

        ``input_ids`` is an optional prompt as the tokenizer gives it ([CLS] a picture of [SEP];
        one row is used for every image): as in BLIP and transformers its first token becomes
        [DEC] and its last one is dropped. Left-padded prompts pass ``attention_mask``; their first
        real token becomes [DEC]. ``min_length`` counts [DEC] and the prompt, as transformers
        does; ``min_new_tokens`` counts the caption only.
        """
        config = self._generation_config(generation_config, overrides, GenerationConfig(max_new_tokens=20))
        self._require("text_decoder")
        if self.config.decoder_context != "image":
            raise ValueError("this BLIP's decoder reads an encoded question (a VQA model): use answer()")
        with eval_mode(self):
            image = self.image_embeds(pixel_values)  # (B, 1 + N, Cv)
            ids, mask = self._caption_prompt(image.shape[0], input_ids, attention_mask, image.device)
            return self._decode(ids, mask, image, config, generator)

    def _caption_prompt(
        self, B: int, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's first ids (B, T) and mask: [DEC] alone, or [DEC] and the prompt's words."""
        t = self.config.text
        if input_ids is None:
            return torch.full((B, 1), t.bos_token_id, dtype=torch.long, device=device), None
        if input_ids.dim() != 2 or input_ids.shape[1] < 2 or input_ids.shape[0] not in (1, B):
            raise ValueError(
                f"prompt input_ids must be (1 or {B}, T >= 2) ([CLS] ... [SEP]), got {tuple(input_ids.shape)}"
            )
        ids = input_ids.expand(B, -1).clone()
        if attention_mask is None:
            ids[:, 0] = t.bos_token_id
        else:  # left padding: the first real token becomes [DEC] (transformers swaps column 0)
            first = attention_mask.expand(B, -1).long().argmax(dim=1)  # (B,)
            ids[torch.arange(B, device=ids.device), first] = t.bos_token_id
        mask = None if attention_mask is None else attention_mask.expand(B, -1)[:, :-1]
        return ids[:, :-1], mask

    @torch.no_grad()
    def answer(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor | None = None,
        *,
        generation_config: GenerationConfig | None = None,
        generator: torch.Generator | None = None,
        **overrides,
    ) -> torch.Tensor:
        """VQA by generation: the question (B, T) is encoded with the image (mode 3) and the decoder,
        cross-attending to every question position (as BLIP and transformers do), writes the
        answer. Returns (B, L): [DEC] answer [SEP] padding. Options as :meth:`generate` (default:
        10 new tokens, greedy)."""
        config = self._generation_config(generation_config, overrides, GenerationConfig(max_new_tokens=10))
        self._require_vqa()
        with eval_mode(self):
            question = self.fused_hidden(question_ids, question_mask, self.image_embeds(pixel_values))  # (B, T, H)
            ids = torch.full(
                (question.shape[0], 1), self.config.text.bos_token_id, dtype=torch.long, device=question.device
            )
            return self._decode(ids, None, question, config, generator)

    @torch.no_grad()
    def rank_answers(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor | None,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        k: int = 128,
    ) -> torch.Tensor:
        """VQA by ranking a closed answer list, as BLIP does: shortlist the ``k`` answers whose first
        token is most likely after [DEC], then pick the one with the highest total log-likelihood.

        ``answer_ids`` (A, L): tokenized answers ([CLS] answer [SEP], padded; the first token is
        replaced by [DEC]); ``answer_mask`` (A, L). Returns the chosen answer index per question (B,).
        """
        self._require_vqa()
        t = self.config.text
        if answer_ids.dim() != 2 or answer_ids.shape[1] < 2 or answer_mask.shape != answer_ids.shape:
            raise ValueError(
                f"answer_ids and answer_mask must both be (A, L >= 2), got "
                f"{tuple(answer_ids.shape)} and {tuple(answer_mask.shape)}"
            )
        question = self.fused_hidden(question_ids, question_mask, self.image_embeds(pixel_values))  # (B, T, H)
        B, A = question.shape[0], answer_ids.shape[0]
        k = min(k, A)
        answers = answer_ids.clone()
        answers[:, 0] = t.bos_token_id
        start = answers[:1, :1].expand(B, 1)  # (B, 1) [DEC]
        first = self.decoder_logits(start, None, question, question_mask)[:, 0].softmax(dim=-1)  # (B, V)
        top_ids = first[:, answers[:, 1]].topk(k, dim=1).indices  # (B, k) answer indices
        cand = answers[top_ids.flatten()]  # (B * k, L)
        cand_mask = answer_mask[top_ids.flatten()]
        ctx = question.repeat_interleave(k, dim=0)  # (B * k, T, H)
        ctx_mask = None if question_mask is None else question_mask.repeat_interleave(k, dim=0)
        logp = self.decoder_logits(cand, cand_mask, ctx, ctx_mask)[:, :-1].log_softmax(dim=-1)  # (B * k, L - 1, V)
        token_logp = logp.gather(2, cand[:, 1:, None]).squeeze(2) * cand_mask[:, 1:]  # (B * k, L - 1)
        best = token_logp.sum(dim=1).view(B, k).argmax(dim=1)  # (B,)
        return top_ids.gather(1, best[:, None]).squeeze(1)


@torch.no_grad()
def itm_rerank(
    model: Blip,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    sims: torch.Tensor,
    k: int = 128,
    *,
    batch_size: int = 64,
    add_itc: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BLIP's retrieval: shortlist the top ``k`` of ITC similarities ``sims`` (N_img, N_txt) for
    every query and re-score the shortlist with the ITM head (matched logit, plus the ITC
    similarity when ``add_itc``, as BLIP does).

    Returns ``(i2t, t2i)``: (N_img, N_txt) and (N_txt, N_img) score matrices, each row a query;
    entries outside a query's shortlist are -inf. Images are encoded once; ITM runs on
    ``batch_size`` pairs at a time.
    """
    n_img, n_txt = pixel_values.shape[0], input_ids.shape[0]
    if sims.shape != (n_img, n_txt):
        raise ValueError(f"sims must be (images, texts) = ({n_img}, {n_txt}), got {tuple(sims.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    with eval_mode(model):
        image = torch.cat(
            [model.image_embeds(pixel_values[i : i + batch_size]) for i in range(0, n_img, batch_size)]
        )  # (N_img, 1 + N, Cv)
        sims = sims.to(image.device, torch.float32)

        def scores(img_idx: torch.Tensor, txt_idx: torch.Tensor) -> torch.Tensor:  # pairs (P,) -> (P,)
            out = []
            for s in range(0, img_idx.numel(), batch_size):
                i, j = img_idx[s : s + batch_size], txt_idx[s : s + batch_size]
                mask = None if attention_mask is None else attention_mask[j]
                out.append(model.match_logits(model.fused_hidden(input_ids[j], mask, image[i]))[:, 1].float())
            return torch.cat(out)

        results = []
        for image_queries, sim in ((True, sims), (False, sims.t())):
            top_sim, top_idx = sim.topk(min(k, sim.shape[1]), dim=1)  # (Q, k)
            query = torch.arange(sim.shape[0], device=image.device)[:, None].expand_as(top_idx)
            img_idx, txt_idx = (query, top_idx) if image_queries else (top_idx, query)
            s = scores(img_idx.flatten(), txt_idx.flatten()).view_as(top_sim) + (top_sim if add_itc else 0.0)
            results.append(torch.full_like(sim, -float("inf")).scatter_(1, top_idx, s))
        return results[0], results[1]


def _blip(vision: dict, text: dict, embed_dim: int, **parts) -> BlipConfig:
    return BlipConfig(vision=blip_vision_config(**vision), text=BlipTextConfig(**text), embed_dim=embed_dim, **parts)


@register("blip-base")
def blip_base() -> BlipConfig:
    """BLIP pre-training, base size: ViT-B/16 at 384 px, BERT-base MED sharing encoder and decoder."""
    return _blip({}, {}, 256, share_encoder_decoder=True)


@register("blip-tiny")
def blip_tiny() -> BlipConfig:
    """For tests and CPU smoke runs: 32-pixel images, 8-pixel patches, width 32-48, 2 layers; BLIP's
    vocabulary (bert-base-uncased + [DEC] + [ENC]) so that it pairs with the real tokenizer."""
    return _blip(
        dict(image_size=32, patch_size=8, width=48, depth=2, num_heads=4, mlp_dim=96),
        dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=64),
        32,
    )
