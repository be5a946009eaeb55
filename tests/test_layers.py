"""Known answers and properties of the shared layers."""

import math

import pytest
import torch

from vlkit.layers import (
    Attention,
    Block,
    KVCache,
    PatchEmbed,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    Transformer,
    apply_rotary,
    build_attention_mask,
    resize_position_embedding,
    sincos_2d_position_encoding,
    sinusoidal_position_encoding,
)


def test_sinusoidal_known_values():
    pe = sinusoidal_position_encoding(50, 16)
    pos, i = 7, 3  # dims 2i=6 (sin), 2i+1=7 (cos)
    angle = pos / 10000 ** (2 * i / 16)
    assert pe[pos, 6].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 7].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(pe[0, 0::2], torch.zeros(8)) and torch.equal(pe[0, 1::2], torch.ones(8))


def test_sinusoidal_properties():
    P, d = 200, 32
    pe = sinusoidal_position_encoding(P, d).double()
    # bounded
    assert pe.abs().max() <= 1.0
    # every position distinct
    dists = torch.cdist(pe, pe) + torch.eye(P, dtype=pe.dtype) * 1e9
    assert dists.min() > 1e-3
    # PE(pos + k) = M_k PE(pos) for one fixed linear map M_k, for every pos: fit M_k by least
    # squares on all positions and check the residual vanishes; M_k is block-diagonal rotations.
    for k in (1, 5, 17):
        X, Y = pe[: P - k], pe[k:]
        M = torch.linalg.lstsq(X, Y).solution  # X @ M = Y
        assert (X @ M - Y).abs().max() < 1e-6  # float32 storage precision
        # and it is the rotation the formula predicts
        w = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
        R = torch.zeros(d, d, dtype=torch.float64)
        c, s = torch.cos(k * w), torch.sin(k * w)
        R[0::2, 0::2] = torch.diag(c)
        R[1::2, 0::2] = torch.diag(s)
        R[0::2, 1::2] = torch.diag(-s)
        R[1::2, 1::2] = torch.diag(c)
        assert (X @ R - Y).abs().max() < 1e-6


def test_sincos_2d_layout():
    pe = sincos_2d_position_encoding(3, 4, 16)
    assert pe.shape == (12, 16)
    assert pe.abs().max() <= 1
    # patch (row 2, col 1): first half encodes the row, second half the column
    row_part = sincos_2d_position_encoding(3, 4, 16)[2 * 4 + 1, :8]
    assert torch.allclose(row_part, pe[2 * 4 + 3, :8])  # same row, other column
    assert not torch.allclose(pe[2 * 4 + 1, 8:], pe[2 * 4 + 3, 8:])
    assert len({tuple(r.tolist()) for r in pe}) == 12


def test_sincos_2d_known_values():
    # dim 16: a quarter of 4 channels per half-axis with frequencies base^(-i/4) = 1, 0.1, 0.01, 0.001;
    # layout [sin(row * w) | cos(row * w) | sin(col * w) | cos(col * w)], patches row-major.
    pe = sincos_2d_position_encoding(2, 3, 16)
    w = [1.0, 0.1, 0.01, 0.001]
    row, col = 1, 2  # patch index 1 * 3 + 2 = 5
    expected = (
        [math.sin(row * f) for f in w]
        + [math.cos(row * f) for f in w]
        + [math.sin(col * f) for f in w]
        + [math.cos(col * f) for f in w]
    )
    assert pe[5].tolist() == pytest.approx(expected, abs=1e-6)
    assert pe[5, 1].item() == pytest.approx(0.0998334, abs=1e-6)  # sin(0.1), by hand
    assert pe[5, 14].item() == pytest.approx(0.9998000, abs=1e-6)  # cos(2 * 0.01)
    assert pe[0].tolist() == [0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4


def _manual_attention(attn: Attention, x, context=None, mask=None):
    B, T, C = x.shape
    nh, hd = attn.num_heads, attn.head_dim
    if context is None:
        q, k, v = attn.qkv(x).chunk(3, -1)
    else:
        q = attn.q(x)
        k, v = attn.kv(context).chunk(2, -1)
    q, k, v = (t.view(B, -1, nh, hd).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    y = scores.softmax(-1) @ v
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


def test_attention_matches_manual_self_cross_and_masks():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 32)
    attn = Attention(32, 4)
    assert torch.allclose(attn(x), _manual_attention(attn, x), atol=1e-6)
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = build_attention_mask(pad, 5, 5, causal=True)
    assert torch.allclose(attn(x, attn_mask=mask), _manual_attention(attn, x, mask=mask), atol=1e-6)
    causal = build_attention_mask(None, 5, 5, causal=True)
    assert torch.allclose(attn(x, is_causal=True), attn(x, attn_mask=causal), atol=1e-6)
    cross = Attention(32, 4, context_dim=16)
    ctx = torch.randn(2, 7, 16)
    assert torch.allclose(cross(x, context=ctx), _manual_attention(cross, x, context=ctx), atol=1e-6)
    with pytest.raises(ValueError, match="context"):
        cross(x)


def test_padding_changes_nothing_for_real_tokens():
    torch.manual_seed(0)
    enc = Transformer(32, 2, 4, 64, norm_first=False).eval()
    x = torch.randn(1, 4, 32)
    padded = torch.cat([x, torch.randn(1, 3, 32)], dim=1)
    mask = build_attention_mask(torch.tensor([[1, 1, 1, 1, 0, 0, 0]]), 7, 7)
    assert torch.allclose(enc(x), enc(padded, attn_mask=mask)[:, :4], atol=1e-5)


def test_left_padded_causal_real_tokens_ignore_the_padding():
    """Padding mask AND causal mask: left padding changes nothing for the real tokens, full or cached."""
    torch.manual_seed(0)
    dec = Transformer(32, 2, 4, 64, norm_first=True).eval()
    x = torch.randn(1, 4, 32)
    padded = torch.cat([torch.randn(1, 3, 32) * 5, x], dim=1)  # (1, 7, 32): 3 left pads, then x
    pad = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    mask = build_attention_mask(pad, 7, 7, causal=True)
    assert torch.allclose(dec(padded, attn_mask=mask)[:, 3:], dec(x, is_causal=True), atol=1e-5)
    causal_only = build_attention_mask(None, 7, 7, causal=True)  # the bug this guards: padding mask dropped
    assert not torch.allclose(dec(padded, attn_mask=causal_only)[:, 3:], dec(x, is_causal=True), atol=1e-3)
    # the same through the KV cache: a prompt of 3 pads + 3 tokens, then one step
    cache = KVCache(2)
    dec(padded[:, :6], attn_mask=build_attention_mask(pad[:, :6], 6, 6, causal=True), cache=cache)
    step = dec(padded[:, 6:], attn_mask=build_attention_mask(pad, 1, 7, causal=True, past=6), cache=cache)
    assert torch.allclose(step, dec(x, is_causal=True)[:, 3:], atol=1e-5)


def test_fully_masked_query_rows_stay_finite():
    m = build_attention_mask(torch.tensor([[0, 0, 1, 1]]), 4, 4, causal=True)
    assert m.any(-1).all()


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_residual_structure(norm_first):
    torch.manual_seed(0)
    blk = Block(32, 4, 64, norm_first=norm_first).eval()
    x = torch.randn(2, 3, 32)
    if norm_first:
        h = x + blk.attn(blk.norm1(x))
        expected = h + blk.mlp(blk.norm2(h))
    else:
        h = blk.norm1(x + blk.attn(x))
        expected = blk.norm2(h + blk.mlp(h))
    assert torch.allclose(blk(x), expected, atol=1e-6)


def test_cross_attention_block_uses_context():
    torch.manual_seed(0)
    blk = Block(32, 4, cross_attention=True, context_dim=48).eval()
    x, c1, c2 = torch.randn(2, 3, 32), torch.randn(2, 6, 48), torch.randn(2, 6, 48)
    assert blk(x, context=c1).shape == (2, 3, 32)
    assert not torch.allclose(blk(x, context=c1), blk(x, context=c2))


def test_query_block_splits_cross_attention_and_feed_forward():
    """Q-Former block (post-norm): all positions share self-attention; only the first Q
    positions cross-attend and they use mlp_query, the rest use mlp."""
    torch.manual_seed(0)
    blk = Block(32, 4, 64, norm_first=False, cross_attention=True, context_dim=16, query_mlp=True).eval()
    x, ctx, Q = torch.randn(2, 7, 32), torch.randn(2, 5, 16), 3
    h = blk.norm1(x + blk.attn(x))
    q, t = h[:, :Q], h[:, Q:]
    q = blk.norm_cross(q + blk.cross_attn(q, context=ctx))
    q = blk.norm2_query(q + blk.mlp_query(q))
    t = blk.norm2(t + blk.mlp(t))
    assert torch.allclose(blk(x, context=ctx, num_queries=Q), torch.cat([q, t], dim=1), atol=1e-6)
    # text only (no queries, no context): the text feed-forward everywhere
    assert torch.allclose(blk(x), blk.norm2(h + blk.mlp(h)), atol=1e-6)
    # queries only
    qo = blk.norm_cross(h + blk.cross_attn(h, context=ctx))
    assert torch.allclose(blk(x, context=ctx, num_queries=7), blk.norm2_query(qo + blk.mlp_query(qo)), atol=1e-6)


def test_kv_cache_incremental_equals_full():
    torch.manual_seed(0)
    dec = Transformer(32, 2, 4, 64, norm_first=True, cross_attention_layers=True, context_dim=16).eval()
    x, ctx = torch.randn(2, 9, 32), torch.randn(2, 5, 16)
    full = dec(x, is_causal=True, context=ctx)
    cache = KVCache(2)
    outs = [dec(x[:, :4], is_causal=True, context=ctx, cache=cache)]
    for t in range(4, 9):
        mask = build_attention_mask(None, 1, t + 1, causal=True, past=t)
        outs.append(dec(x[:, t : t + 1], attn_mask=mask, context=ctx, cache=cache))
    assert cache.length == 9
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache[0].self_kv[0][0], cache[0].self_kv[0][1])


def test_patch_embed_shapes_and_errors():
    pe = PatchEmbed(16, 3, 768)
    assert pe(torch.randn(1, 3, 224, 224)).shape == (1, 196, 768)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        pe(torch.randn(1, 3, 100, 100))
    with pytest.raises(ValueError, match="B, C, H, W"):
        pe(torch.randn(3, 224, 224))


def test_resize_position_embedding_keeps_prefix_and_identity():
    pos = torch.randn(1, 1 + 16, 8)
    assert torch.equal(resize_position_embedding(pos, (4, 4)), pos)
    out = resize_position_embedding(pos, (6, 6))
    assert out.shape == (1, 37, 8) and torch.equal(out[:, :1], pos[:, :1])


def test_block_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break; the eager backend keeps the check to Dynamo's tracing
    torch.manual_seed(0)
    blk = Block(32, 4, 64, norm_first=False, cross_attention=True, context_dim=16).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 3, 16)
    mask = build_attention_mask(torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), 5, 5, causal=True)
    compiled = torch.compile(blk, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, attn_mask=mask, context=ctx), blk(x, attn_mask=mask, context=ctx), atol=1e-6)


def test_rmsnorm_known_answer_and_float32_compute():
    norm = RMSNorm(4, eps=0.0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 1.0, 0.5]))
    x = torch.tensor([[3.0, -4.0, 0.0, 0.0]])  # rms = sqrt(25 / 4) = 2.5
    assert torch.allclose(norm(x), torch.tensor([[1.2, -3.2, 0.0, 0.0]]), atol=1e-6)
    eps = RMSNorm(2, eps=1.0)(torch.tensor([[1.0, 1.0]]))  # 1 / sqrt(1 + 1)
    assert torch.allclose(eps, torch.full((1, 2), 2**-0.5), atol=1e-6)
    # bf16 input: the statistics in float32, one rounding to bf16 at the end (as HF's LlamaRMSNorm)
    x = (torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 30).to(torch.bfloat16)
    out = RMSNorm(64, eps=1e-6).to(torch.bfloat16)(x)
    ref = (x.double() * (x.double().pow(2).mean(-1, keepdim=True) + 1e-6).rsqrt()).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16 and (out != ref).float().mean() < 0.01


def test_fused_rmsnorm_and_joint_rotary_give_the_same_floats():
    """float32 RMSNorm runs torch's F.rms_norm and Attention rotates queries and keys as one tensor:
    both are the step-by-step arithmetic (HF's), bit for bit."""
    g = torch.Generator().manual_seed(0)
    for C, rows in ((384, (1, 1)), (64, (3, 17)), (37, (2, 5))):
        norm = RMSNorm(C, eps=1e-6)
        with torch.no_grad():
            norm.weight.copy_(torch.randn(C, generator=g))
        x = torch.randn(*rows, C, generator=g) * 3
        assert torch.equal(norm(x), norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)))
    attn = Attention(32, 4, num_kv_heads=2, qkv_bias=False)
    x = torch.randn(2, 5, 32, generator=g)
    cos, sin = RotaryEmbedding(8, theta=500.0)(torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]))
    q, k, v = attn._rotated_heads(attn.qkv(x), (cos, sin))
    q0, k0, v0 = attn.qkv(x).split([32, 16, 16], dim=-1)
    assert torch.equal(q, apply_rotary(attn._heads(q0, 4), cos, sin))
    assert torch.equal(k, apply_rotary(attn._heads(k0, 2), cos, sin))
    assert torch.equal(v, attn._heads(v0, 2))


def test_rotary_preserves_norms_and_depends_on_relative_position():
    torch.manual_seed(0)
    rope = RotaryEmbedding(16, theta=500.0)
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16)

    def at(x, pos):
        cos, sin = rope(torch.tensor([[pos]]))
        return apply_rotary(x, cos, sin)

    assert torch.allclose(at(q, 0), q)  # position 0 is the identity
    assert torch.allclose(at(q, 37).norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    dots = [(at(q, m) * at(k, n)).sum(-1) for m, n in ((5, 2), (13, 10), (103, 100))]  # all m - n = 3
    assert torch.allclose(dots[0], dots[1], atol=1e-4) and torch.allclose(dots[0], dots[2], atol=1e-4)
    assert not torch.allclose(dots[0], (at(q, 5) * at(k, 5)).sum(-1), atol=1e-3)
    # the rotate-half layout: channel i pairs with i + hd/2, angle pos * theta^(-2i/hd)
    cos, sin = rope(torch.tensor([[3]]))
    angle = 3 * 500.0 ** (-2 * 1 / 16)
    assert math.isclose(cos[0, 0, 1].item(), math.cos(angle), abs_tol=1e-6)
    assert math.isclose(sin[0, 0, 9].item(), math.sin(angle), abs_tol=1e-6)


def test_grouped_query_attention_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    C, nh, nkv, hd = 32, 4, 2, 8
    gqa = Attention(C, nh, num_kv_heads=nkv, qkv_bias=False)
    assert gqa.qkv.weight.shape == (C + 2 * nkv * hd, C)
    mha = Attention(C, nh, qkv_bias=False)
    wq, wk, wv = gqa.qkv.weight.split([C, nkv * hd, nkv * hd])
    rep = lambda w: w.view(nkv, hd, C).repeat_interleave(nh // nkv, dim=0).reshape(nh * hd, C)
    with torch.no_grad():
        mha.qkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.proj.load_state_dict(gqa.proj.state_dict())
    x = torch.randn(2, 6, C)
    mask = build_attention_mask(torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6]), 6, 6, causal=True)
    cos, sin = RotaryEmbedding(hd)(torch.arange(6).expand(2, 6))
    assert torch.allclose(gqa(x, attn_mask=mask, rope=(cos, sin)), mha(x, attn_mask=mask, rope=(cos, sin)), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        Attention(C, nh, num_kv_heads=3)


def _llama_block(**kw):
    return Block(32, 4, 48, norm="rmsnorm", act="swiglu", rotary=True, num_kv_heads=2, qkv_bias=False,
                 proj_bias=False, mlp_bias=False, **kw)  # fmt: skip


def test_llama_block_layout_and_cached_rotary_decoding():
    torch.manual_seed(0)
    blk = _llama_block()
    assert isinstance(blk.norm1, RMSNorm) and isinstance(blk.mlp, SwiGLU)
    assert sorted(k for k, _ in blk.named_parameters()) == [
        "attn.proj.weight", "attn.qkv.weight", "mlp.fc1.weight", "mlp.fc2.weight", "norm1.weight", "norm2.weight",
    ]  # fmt: skip
    dec = Transformer(32, 2, 4, 48, norm="rmsnorm", act="swiglu", rotary=True, num_kv_heads=2).eval()
    rotary = RotaryEmbedding(8, theta=1000.0)
    x = torch.randn(2, 7, 32)
    full = dec(x, is_causal=True, rope=rotary(torch.arange(7).expand(2, 7)))
    cache = KVCache(2)
    outs = [dec(x[:, :3], is_causal=True, cache=cache, rope=rotary(torch.arange(3).expand(2, 3)))]
    for t in range(3, 7):
        outs.append(dec(x[:, t : t + 1], cache=cache, rope=rotary(torch.full((2, 1), t))))
    assert cache[0].self_kv[0].shape == (2, 2, 7, 8)  # the cache keeps the 2 key/value heads, unrepeated
    assert torch.allclose(torch.cat(outs, dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="rope must be given"):
        dec(x)


def test_llama_block_compiles_without_graph_breaks():
    torch.manual_seed(0)
    blk = _llama_block().eval()
    x = torch.randn(2, 5, 32)
    rope = RotaryEmbedding(8)(torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]))
    mask = build_attention_mask(torch.tensor([[0, 0, 1, 1, 1], [1] * 5]), 5, 5, causal=True)
    compiled = torch.compile(blk, fullgraph=True, backend="eager")
    assert torch.allclose(compiled(x, attn_mask=mask, rope=rope), blk(x, attn_mask=mask, rope=rope), atol=1e-6)
