"""Multi-head attention through ``scaled_dot_product_attention``: self or cross, padding and
causal masks, and a KV cache for incremental decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rotary import apply_rotary


class LayerCache:
    """Past keys and values of one block: self-attention grows by one step per decoded token,
    cross-attention keys/values are computed once from the context and reused."""

    def __init__(self) -> None:
        self.self_kv: tuple[torch.Tensor, torch.Tensor] | None = None
        self.cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def length(self) -> int:
        return 0 if self.self_kv is None else self.self_kv[0].shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, nh, T_new, hd) -> all keys/values so far (B, nh, T_past + T_new, hd)
        if self.self_kv is not None:
            k = torch.cat([self.self_kv[0], k], dim=2)
            v = torch.cat([self.self_kv[1], v], dim=2)
        self.self_kv = (k, v)
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        if self.self_kv is not None:
            k, v = self.self_kv
            self.self_kv = (k.index_select(0, index), v.index_select(0, index))
        if self.cross_kv is not None:
            k, v = self.cross_kv
            self.cross_kv = (k.index_select(0, index), v.index_select(0, index))


class KVCache:
    """One :class:`LayerCache` per block of a :class:`~vlkit.layers.Transformer`."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[LayerCache] = [LayerCache() for _ in range(num_layers)]

    def __getitem__(self, i: int) -> LayerCache:
        return self.layers[i]

    @property
    def length(self) -> int:
        """Number of positions already stored."""
        return self.layers[0].length

    def reorder(self, index: torch.Tensor) -> None:
        """Select batch rows (beam search keeps the beams that survived)."""
        for layer in self.layers:
            layer.reorder(index)


class StaticLayerCache(LayerCache):
    """Keys and values of one block in buffers (B, nkv, capacity, hd) allocated at the first write.

    Two ways to write: with ``owner.slots`` None (the prompt, eager) the new keys go right after
    the ``filled`` ones and the filled part is returned, exactly as :class:`LayerCache` would;
    with ``owner.slots`` a (t,) tensor (a decoding step) they are copied in place at those
    positions and the whole buffers are returned: shapes never change, so a compiled step never
    recompiles, and :meth:`StaticKVCache.causal_mask` hides what is not written yet.
    """

    def __init__(self, owner: StaticKVCache) -> None:
        super().__init__()
        self.owner = owner
        self.filled = 0  # positions written (host-side count; a compiled step never reads it)

    @property
    def length(self) -> int:
        return self.filled

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        slots = self.owner.slots
        if slots is not None:  # a decoding step: static shapes, in place
            assert self.self_kv is not None, "a static cache is filled by the prompt before slots are set"
            keys, values = self.self_kv
            keys.index_copy_(2, slots, k)
            values.index_copy_(2, slots, v)
            return keys, values
        start, end = self.owner.length, self.owner.length + k.shape[2]
        if self.self_kv is None:
            B, n, _, hd = k.shape
            size = self.owner.capacity_for(end)
            self.self_kv = (k.new_zeros(B, n, size, hd), v.new_zeros(B, n, size, hd))
            for t in self.self_kv:
                _mark_static_address(t)
        keys, values = self.self_kv
        if end > keys.shape[2]:
            raise ValueError(f"the static cache holds {keys.shape[2]} positions; {end} were asked for")
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        self.filled = end
        return keys[:, :, :end], values[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        if self.self_kv is not None and index.shape[0] == self.self_kv[0].shape[0]:
            for t in self.self_kv:  # in place: the buffers keep their address (CUDA graphs)
                t.copy_(t.index_select(0, index))
            if self.cross_kv is not None:
                k, v = self.cross_kv
                self.cross_kv = (k.index_select(0, index), v.index_select(0, index))
            return
        super().reorder(index)


class StaticKVCache(KVCache):
    """A preallocated KV cache: the prompt plus ``max_new_tokens`` positions (rounded up to a
    multiple of ``multiple`` so that prompts of similar lengths share one compiled step).

    The prompt is written as in :class:`KVCache`; each decoding step then sets ``slots`` (the
    (t,) positions it writes, a tensor), runs the model with a padding mask over the whole
    capacity (:meth:`causal_mask`), and :meth:`advance` counts the positions on the host.
    """

    def __init__(self, num_layers: int, max_new_tokens: int, *, multiple: int = 64) -> None:
        self.max_new_tokens, self.multiple = max_new_tokens, multiple
        self.slots: torch.Tensor | None = None  # (t,) positions written by the current step
        self.layers: list[LayerCache] = [StaticLayerCache(self) for _ in range(num_layers)]

    @property
    def length(self) -> int:
        # every layer reads this before writing; the last layer is the last to update its count
        return self.layers[-1].length

    @property
    def capacity(self) -> int:
        """Positions the buffers hold (0 before the prompt is written)."""
        kv = self.layers[0].self_kv
        return 0 if kv is None else kv[0].shape[2]

    def capacity_for(self, prompt_length: int) -> int:
        need = prompt_length + self.max_new_tokens
        return -(-need // self.multiple) * self.multiple

    def advance(self, t: int) -> None:
        """Count ``t`` positions written by a decoding step."""
        for layer in self.layers:
            assert isinstance(layer, StaticLayerCache)
            layer.filled += t

    def causal_mask(self, key_padding_mask: torch.Tensor) -> torch.Tensor:
        """The mask (B, 1, t, capacity) of the step writing ``slots``: query i sees the keys at
        or before ``slots[i]`` that ``key_padding_mask`` (B, capacity), 1 for real tokens, keeps."""
        if self.slots is None:
            raise ValueError("causal_mask is for decoding steps: set slots first")
        k_pos = torch.arange(key_padding_mask.shape[1], device=key_padding_mask.device)  # (S,)
        mask = (k_pos[None, :] <= self.slots[:, None])[None, None]  # (1, 1, t, S)
        mask = mask & key_padding_mask.bool()[:, None, None, :]  # (B, 1, t, S)
        return mask | ~mask.any(dim=-1, keepdim=True)  # a query that sees nothing sees everything


def _mark_static_address(t: torch.Tensor) -> None:
    """CUDA graphs (torch.compile mode "reduce-overhead") may keep a buffer that steps mutate
    in place only when its address is marked static."""
    if t.is_cuda:
        torch._dynamo.mark_static_address(t)


def decoder_mask(
    attention_mask: torch.Tensor | None, q_len: int, cache: KVCache | None, *, device: torch.device
) -> tuple[torch.Tensor | None, bool]:
    """(mask, is_causal) of a causal decoder's self-attention for ``q_len`` new tokens on
    ``cache``: is_causal when plain causal attention serves (no padding, nothing cached), else a
    mask (or None: every key). ``attention_mask``: (B, past + q_len), 1 for real tokens; in a static
    cache's decoding step (B, capacity)."""
    if isinstance(cache, StaticKVCache) and cache.slots is not None:
        if attention_mask is None:
            raise ValueError("a static cache's decoding step needs the padding mask over its capacity")
        return cache.causal_mask(attention_mask), False
    past = 0 if cache is None else cache.length
    if attention_mask is None and past == 0:
        return None, True
    return build_attention_mask(attention_mask, q_len, past + q_len, causal=True, past=past, device=device), False


def build_attention_mask(
    key_padding_mask: torch.Tensor | None,
    q_len: int,
    k_len: int,
    causal: bool = False,
    past: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean mask (True = may attend) broadcastable to (B, nh, q_len, k_len), or None.

    ``key_padding_mask``: (B, k_len), 1/True for real tokens. ``past``: cached positions before
    the queries (query i sits at position past + i and sees keys 0..past + i when causal).
    Built once per batch and shared by every block.
    """
    mask = None
    if causal and not (q_len == 1 and past == k_len - 1):
        q_pos = torch.arange(past, past + q_len, device=device if key_padding_mask is None else key_padding_mask.device)
        k_pos = torch.arange(k_len, device=q_pos.device)
        mask = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, Tq, Tk)
    if key_padding_mask is not None:
        pad = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
        mask = pad if mask is None else mask & pad
        # A query that may see no key at all (a left-pad position under a causal mask) would give
        # NaN; let it see everything instead: its output is padding and never read.
        mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask


class Attention(nn.Module):
    """Multi-head scaled dot-product attention, with grouped-query attention and rotary positions.

    Self-attention projects queries, keys and values with one fused ``qkv`` linear layer (rows:
    queries, then keys, then values); cross-attention (``context_dim`` given) projects queries with
    ``q`` and keys/values of the context with ``kv``. ``num_kv_heads`` < ``num_heads`` is
    grouped-query attention (Llama 2 70B, Mistral, TinyLlama): keys and values have
    ``num_kv_heads`` heads, each shared by ``num_heads / num_kv_heads`` query heads; the KV cache
    stores them unrepeated. ``rope`` (cos, sin) given to ``forward`` rotates queries and keys of
    self-attention (see :mod:`vlkit.layers.rotary`).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        context_dim: int | None = None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.is_cross = context_dim is not None
        if context_dim is not None:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(context_dim, 2 * kv_dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim + 2 * kv_dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, t: torch.Tensor, n: int) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def _keys_values(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = t.chunk(2, dim=-1)
        return self._heads(k, self.num_kv_heads), self._heads(v, self.num_kv_heads)  # (B, nkv, S, hd) each

    def _rotated_heads(
        self, qkv: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qkv (B, T, C + 2 * kv_dim) -> q (B, nh, T, hd), k and v (B, nkv, T, hd), queries and
        keys rotated by rope (cos, sin), each (B, T, hd). The queries and keys are rotated as one
        (B, T, nh + nkv, hd) tensor: the same arithmetic as rotating each, half the kernels."""
        B, T, _ = qkv.shape
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        qk, v = qkv.split([(nh + nkv) * hd, nkv * hd], dim=-1)
        cos, sin = rope
        qk = apply_rotary(qk.view(B, T, nh + nkv, hd).transpose(1, 2), cos, sin)  # (B, nh + nkv, T, hd)
        q, k = qk.split([nh, nkv], dim=1)
        return q, k, self._heads(v, nkv)

    def forward(
        self,
        x: torch.Tensor,
        *,
        context: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: LayerCache | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C); context: (B, S, Cc) for cross-attention; attn_mask: bool, True = attend;
        rope: (cos, sin), each (B, T, hd), of the positions of x."""
        B, T, C = x.shape
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            q = self._heads(self.q(x), self.num_heads)
            if cache is not None and cache.cross_kv is not None:
                k, v = cache.cross_kv
            else:
                k, v = self._keys_values(self.kv(context))
                if cache is not None:
                    cache.cross_kv = (k, v)
        else:
            qkv = self.qkv(x)  # (B, T, C + 2 * kv_dim)
            if rope is not None:
                q, k, v = self._rotated_heads(qkv, rope)
            else:
                q, kv = qkv.split([C, self.qkv.out_features - C], dim=-1)
                q, (k, v) = self._heads(q, self.num_heads), self._keys_values(kv)  # (B, nh, T, hd), (B, nkv, T, hd)
            if cache is not None:
                k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            is_causal=is_causal and attn_mask is None,
            enable_gqa=self.num_kv_heads != self.num_heads,  # query head h reads kv head h // (nh / nkv)
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.proj_drop(self.proj(y))
