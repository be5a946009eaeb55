"""BLIP: parity with HF transformers (random tiny models, float32), generation identical to
transformers' generate, VQA answer ranking and ITM re-ranking against brute force, weight sharing."""

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.models import Blip, CheckpointError, GenerationConfig, itm_rerank

transformers = pytest.importorskip("transformers")
TOL = 1e-5
V, BOS, SEP, PAD = 99, 90, 3, 0


def _hf_config(text_hidden=32, vision_width=48):
    text = dict(
        vocab_size=V,
        hidden_size=text_hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=BOS,
        eos_token_id=2,
        pad_token_id=PAD,
        sep_token_id=SEP,
    )
    vision = dict(
        hidden_size=vision_width,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    return transformers.BlipConfig(text_config=text, vision_config=vision, image_text_hidden_size=24)


def _build(tmp_path, arch, sep_bias=0.0, **kw):
    """A random HF model (weights perturbed so every parameter matters) and vlkit's load of it.
    ``sep_bias`` is added to the decoder's [SEP] logit (4: [SEP] is the best token at every step)."""
    torch.manual_seed(0)
    ref = getattr(transformers, arch)(_hf_config(**kw)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        if sep_bias:
            ref.text_decoder.cls.predictions.bias[SEP] += sep_bias
    return ref, vlkit.from_pretrained(save_hf(ref, tmp_path / arch))


def _inputs(b=3, t=9):
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(b, 3, 32, 32, generator=g)
    ids = torch.randint(4, BOS, (b, t), generator=g)
    ids[:, 0] = 1  # a [CLS]-like first token
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = PAD
    return pixels, ids, mask


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("blip"), "BlipForImageTextRetrieval")


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("blip"), "BlipForConditionalGeneration")


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    # HF's VQA decoder cross-attends to the question with K/V sized for the vision width: keep them equal
    return _build(tmp_path_factory.mktemp("blip"), "BlipForQuestionAnswering", vision_width=32)


@pytest.fixture(scope="module")
def eager_captioner(tmp_path_factory):
    """A captioner that ends ([SEP]) as soon as it may: [SEP] is the best token at the boundary."""
    return _build(tmp_path_factory.mktemp("blip"), "BlipForConditionalGeneration", sep_bias=4.0)


def test_loaded_parts_follow_the_checkpoint(retrieval, captioner, vqa):
    parts = lambda m: (m.config.text_encoder, m.config.text_decoder, m.config.retrieval_heads, m.config.decoder_context)
    assert parts(retrieval[1]) == (True, False, True, "image")
    assert parts(captioner[1]) == (False, True, False, "image")
    assert parts(vqa[1]) == (True, True, False, "question")
    for _, model in (retrieval, captioner, vqa):
        assert isinstance(model, Blip) and not model.config.share_encoder_decoder
        assert model.config.vision.interpolation == "bicubic" and model.config.vision.resize_mode == "squash"
        assert model.config.vision.image_mean == (0.48145466, 0.4578275, 0.40821073)


def test_itm_and_itc_parity(retrieval):
    ref, model = retrieval
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        itm_ref = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=True).itm_score
        itc_ref = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask, use_itm_head=False).itm_score
        itm = model.itm_logits(pixels, ids, mask)
        itc = model.encode_image(pixels, normalize=True) @ model.encode_text(ids, mask, normalize=True).t()
        image_out = ref.vision_model(pixel_values=pixels).last_hidden_state
    assert itm.shape == (3, 2) and itc.shape == (3, 3)
    assert max_diff(itm, itm_ref) <= TOL
    assert max_diff(itc, itc_ref) <= TOL
    assert max_diff(model.image_embeds(pixels), image_out) <= TOL
    assert itm.std() > 0.05 and itc.std() > 0.05  # the comparison is not between constants


def test_decoder_logits_parity(captioner):
    ref, model = captioner
    pixels, ids, mask = _inputs()
    ids[:, 0] = BOS
    with torch.no_grad():
        expected = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask).logits
        got = model.decoder_logits(ids, mask, model.image_embeds(pixels))
        out = model(pixels, ids, mask, decoder_input_ids=ids, decoder_attention_mask=mask)
    assert max_diff(got, expected) <= TOL
    assert torch.equal(out["lm_logits"], got)


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(num_beams=3),
        dict(num_beams=3, min_length=8, repetition_penalty=1.5),
        dict(min_length=6, repetition_penalty=1.3),
        dict(num_beams=2, length_penalty=0.5),
    ],
)
def test_captions_identical_to_transformers(captioner, opts):
    ref, model = captioner
    pixels, _, _ = _inputs(4)
    with torch.no_grad():
        expected = ref.generate(pixels, max_new_tokens=12, **opts)
        got = model.generate(pixels, max_new_tokens=12, **opts)
    assert torch.equal(got, expected)
    assert len({tuple(r.tolist()) for r in got}) > 1  # different images, different captions


def test_prompted_captions_identical_to_transformers(captioner):
    ref, model = captioner
    pixels, _, _ = _inputs(3)
    prompt = torch.tensor([[1, 11, 12, 13, SEP]])  # [CLS] a picture of [SEP]
    with torch.no_grad():
        for opts in (dict(), dict(num_beams=3)):
            expected = ref.generate(pixels, input_ids=prompt.repeat(3, 1), max_new_tokens=8, **opts)
            got = model.generate(pixels, input_ids=prompt, max_new_tokens=8, **opts)
            assert torch.equal(got, expected)
            assert torch.equal(got[:, :4], torch.tensor([[BOS, 11, 12, 13]] * 3))
        # prompts of different lengths, left-padded, one per image: vlkit turns each row's first real
        # token into [DEC]; transformers swaps column 0 (padding in short rows), so hand it [DEC] there
        prompts = torch.tensor([[1, 11, 12, 13, SEP], [PAD, PAD, 1, 14, SEP], [PAD, 1, 15, 16, SEP]])
        mask = (prompts != PAD).long()
        with_dec = prompts.masked_fill(prompts == 1, BOS)
        expected = ref.generate(pixels, input_ids=with_dec.clone(), attention_mask=mask, max_new_tokens=6)
        got = model.generate(pixels, input_ids=prompts, attention_mask=mask, max_new_tokens=6)
        assert torch.equal(got[:, 1:], expected[:, 1:])
        assert got[:, 0].tolist() == [BOS, PAD, PAD] and (got == BOS).sum(1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize(
    "opts, new_tokens",
    [
        (dict(), 0),
        (dict(min_length=4), 3),  # [DEC] counts
        (dict(min_new_tokens=3), 3),
        (dict(min_new_tokens=1, repetition_penalty=1.3), 1),
        (dict(min_length=3, min_new_tokens=4), 4),
    ],
)
def test_caption_ends_right_at_the_minimum_length(eager_captioner, num_beams, opts, new_tokens):
    ref, model = eager_captioner
    pixels, _, _ = _inputs(3)
    with torch.no_grad():
        expected = ref.generate(pixels, max_new_tokens=8, num_beams=num_beams, **opts)
        got = model.generate(pixels, max_new_tokens=8, num_beams=num_beams, **opts)
    assert torch.equal(got, expected)
    assert got.shape == (3, 1 + new_tokens + 1) and (got[:, -1] == SEP).all() and not (got[:, :-1] == SEP).any()


def test_prompted_caption_ends_right_at_the_minimum_length(eager_captioner):
    ref, model = eager_captioner
    pixels, _, _ = _inputs(2)
    prompt = torch.tensor([[1, 11, 12, 13, SEP]])  # the decoder starts from [DEC] 11 12 13: length 4
    with torch.no_grad():
        for opts in (dict(min_length=6), dict(min_new_tokens=2), dict(min_new_tokens=2, num_beams=2)):
            expected = ref.generate(pixels, input_ids=prompt.repeat(2, 1), max_new_tokens=6, **opts)
            got = model.generate(pixels, input_ids=prompt, generation_config=GenerationConfig(max_new_tokens=6), **opts)
            assert torch.equal(got, expected)
            assert got.shape == (2, 4 + 2 + 1) and (got[:, -1] == SEP).all()


def test_sampled_captions_identical_to_transformers_under_the_same_seed(captioner):
    ref, model = captioner
    pixels, _, _ = _inputs(4)
    opts = dict(max_new_tokens=10, do_sample=True, top_p=0.9, top_k=20, temperature=1.5)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = ref.generate(pixels, **opts)
        torch.manual_seed(7)
        got = model.generate(pixels, **opts)
        greedy = model.generate(pixels, max_new_tokens=10)
    assert torch.equal(got, expected)
    assert not torch.equal(got, greedy)


def test_vqa_parity(vqa):
    ref, model = vqa
    pixels, ids, mask = _inputs()
    answer = torch.randint(4, BOS, (3, 5))
    answer[:, 0] = BOS
    with torch.no_grad():
        image = model.image_embeds(pixels)
        question = model.fused_hidden(ids, mask, image)
        q_ref = ref.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).last_hidden_state
        # transformers 5 drops encoder_attention_mask inside BlipTextAttention, so its decoder sees
        # every question position; vlkit honours the mask as BLIP does: compare without one
        logits_ref = ref.text_decoder(input_ids=answer, encoder_hidden_states=q_ref).logits
        logits = model.decoder_logits(answer, None, question)
        # and the mask really hides the padded question positions from the decoder
        masked = model.decoder_logits(answer, None, question, mask)
        noisy = question.clone()
        noisy[mask == 0] += 5.0
        masked_noisy = model.decoder_logits(answer, None, noisy, mask)
    assert max_diff(question, q_ref) <= TOL
    assert max_diff(logits, logits_ref) <= TOL
    assert max_diff(masked_noisy, masked) <= TOL
    assert max_diff(masked[1], logits[1]) > 1e-3 and max_diff(masked[0], logits[0]) <= TOL


@pytest.mark.parametrize("num_beams", [1, 3])
def test_vqa_answers_identical_to_transformers(vqa, num_beams):
    ref, model = vqa
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        expected = ref.generate(
            input_ids=ids, pixel_values=pixels, attention_mask=mask, max_new_tokens=6, num_beams=num_beams
        )
        got = model.answer(pixels, ids, mask, max_new_tokens=6, num_beams=num_beams)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("num_beams", [1, 2])
def test_vqa_answers_keep_min_new_tokens(vqa, num_beams):
    _, model = vqa
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        first = model.answer(pixels, ids, mask, max_new_tokens=1)[:, 1]  # each row's greedy first token
        end = int(first[0])  # as the end token: row 0 would stop at once
        plain = model.answer(pixels, ids, mask, max_new_tokens=6, eos_token_id=end)
        config = GenerationConfig(max_new_tokens=6, min_new_tokens=3, eos_token_id=end, num_beams=num_beams)
        got = model.answer(pixels, ids, mask, generation_config=config)
        same = model.answer(pixels, ids, mask, generation_config=config.replace(min_new_tokens=0, min_length=4))
    assert plain[0].tolist() == [BOS, end] + [PAD] * (plain.shape[1] - 2)
    assert not (got[:, 1:4] == end).any() and got.shape[1] > 4
    assert torch.equal(got, same)  # min_length counts [DEC]


def test_rank_answers_matches_full_likelihood_ranking(vqa):
    ref, model = vqa
    pixels, ids, _ = _inputs()
    ids[1, 6:] = 7
    mask = torch.ones_like(ids)  # unpadded: transformers 5 ignores the question mask in the decoder
    g = torch.Generator().manual_seed(3)
    answers = torch.randint(4, BOS, (7, 5), generator=g)
    answers[:, 0], answers[:, 3:] = 1, PAD
    answers[:3, 3], answers[3:, 2] = SEP, SEP  # answers of one and two words
    answers[:3, 2] = torch.randint(4, BOS, (3,), generator=g)
    amask = (answers != PAD).long()
    with torch.no_grad():
        # reference: every answer's summed log-likelihood under transformers' decoder
        image = ref.vision_model(pixel_values=pixels).last_hidden_state
        q = ref.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).last_hidden_state
        dec_in = answers.clone()
        dec_in[:, 0] = BOS
        scores = torch.empty(3, 7)
        for a in range(7):
            labels = dec_in[a : a + 1].repeat(3, 1).masked_fill(amask[a : a + 1].repeat(3, 1) == 0, -100)
            out = ref.text_decoder(
                input_ids=dec_in[a : a + 1].repeat(3, 1),
                attention_mask=amask[a : a + 1].repeat(3, 1),
                encoder_hidden_states=q,
                encoder_attention_mask=mask,
                labels=labels,
                reduction="none",
            )
            scores[:, a] = -out.loss
        first = model.rank_answers(pixels, ids, mask, answers, amask, k=7)
        assert torch.equal(first, scores.argmax(dim=1))
        # with a shortlist: the best full-likelihood answer among the k most likely first tokens
        start = ref.text_decoder(
            input_ids=torch.full((3, 1), BOS), encoder_hidden_states=q, encoder_attention_mask=mask
        ).logits[:, 0]
        short = start.softmax(-1)[:, dec_in[:, 1]].topk(2, dim=1).indices
        expected = short.gather(1, scores.gather(1, short).argmax(1, keepdim=True)).squeeze(1)
        assert torch.equal(model.rank_answers(pixels, ids, mask, answers, amask, k=2), expected)


def test_itm_rerank_against_brute_force(retrieval):
    _, model = retrieval
    pixels, ids, mask = _inputs(4)
    with torch.no_grad():
        sims = model.encode_image(pixels, normalize=True) @ model.encode_text(ids, mask, normalize=True).t()
        sims = sims[:, [0, 1, 2, 3, 0]]  # 4 images x 5 texts
        texts, tmask = ids[[0, 1, 2, 3, 0]], mask[[0, 1, 2, 3, 0]]
        matched = torch.stack([model.itm_logits(pixels[i].expand(5, -1, -1, -1), texts, tmask)[:, 1] for i in range(4)])
        i2t, t2i = itm_rerank(model, pixels, texts, tmask, sims, k=2, batch_size=3)
    assert i2t.shape == (4, 5) and t2i.shape == (5, 4)
    full = matched + sims
    for i in range(4):
        top = sims[i].topk(2).indices
        assert torch.allclose(i2t[i, top], full[i, top], atol=1e-5)
        assert (i2t[i].isinf().sum()) == 3
    for j in range(5):
        top = sims[:, j].topk(2).indices
        assert torch.allclose(t2i[j, top], full[top, j], atol=1e-5)
        assert (t2i[j].isinf().sum()) == 2
    i2t_only, _ = itm_rerank(model, pixels, texts, tmask, sims, k=5, add_itc=False)
    assert torch.allclose(i2t_only, matched, atol=1e-5)


def test_shared_encoder_decoder_shares_all_but_self_attention(tmp_path):
    shared = vlkit.create_model("blip-tiny", share_encoder_decoder=True)
    apart = vlkit.create_model("blip-tiny")
    enc, dec = shared.text_encoder, shared.text_decoder
    assert dec.embeddings is enc.embeddings
    for e, d in zip(enc.transformer.blocks, dec.transformer.blocks):
        assert d.cross_attn is e.cross_attn and d.mlp is e.mlp and d.norm2 is e.norm2 and d.norm_cross is e.norm_cross
        assert d.attn is not e.attn and d.norm1 is not e.norm1
    own = lambda m: (
        sum(p.numel() for p in m.text_decoder.parameters())
        - sum(
            p.numel()
            for p in m.text_decoder.transformer.blocks.parameters()
            if any(p is q for q in m.text_encoder.parameters())
        )
    )
    assert shared.num_parameters() < apart.num_parameters()
    assert own(shared) < own(apart)
    # training one tower moves the shared weights of the other
    pixels, ids, mask = _inputs(2)
    shared.text_decoder.embeddings.tokens.weight.data[ids[0, 1]] += 1.0
    # save/load keeps the sharing and the outputs
    loaded = vlkit.from_pretrained(shared.save_pretrained(tmp_path / "shared"))
    assert loaded.text_decoder.transformer.blocks[0].mlp is loaded.text_encoder.transformer.blocks[0].mlp
    with torch.no_grad():
        assert torch.equal(loaded.itm_logits(pixels, ids, mask), shared.itm_logits(pixels, ids, mask))
        assert torch.equal(loaded.generate(pixels, max_new_tokens=5), shared.generate(pixels, max_new_tokens=5))


def test_hf_loaded_model_roundtrips_through_a_vlkit_folder(captioner, tmp_path):
    _, model = captioner
    loaded = vlkit.from_pretrained(model.save_pretrained(tmp_path / "cap"))
    pixels, _, _ = _inputs(2)
    with torch.no_grad():
        assert torch.equal(loaded.generate(pixels, max_new_tokens=6), model.generate(pixels, max_new_tokens=6))


def test_cached_decoding_equals_full_recompute(captioner):
    _, model = captioner
    pixels, _, _ = _inputs(2)
    with torch.no_grad():
        out = model.generate(pixels, max_new_tokens=8)
        image = model.image_embeds(pixels)
        full = model.decoder_logits(out[:, :-1], None, image).argmax(-1)  # greedy choice at every position
    done = torch.cumsum(out[:, 1:] == SEP, dim=1) - (out[:, 1:] == SEP).long()  # tokens after the first [SEP]
    assert torch.equal(full[done == 0], out[:, 1:][done == 0])


def test_errors_name_the_problem(retrieval, captioner, vqa):
    pixels, ids, mask = _inputs(2)
    with pytest.raises(ValueError, match="no text_decoder"):
        retrieval[1].generate(pixels)
    with pytest.raises(ValueError, match="no text_encoder"):
        captioner[1].encode_text(ids)
    with pytest.raises(ValueError, match="use answer"):
        vqa[1].generate(pixels)
    with pytest.raises(ValueError, match="use generate"):
        captioner[1].answer(pixels, ids)
    with pytest.raises(ValueError, match="pairs"):
        retrieval[1].itm_logits(pixels, ids[:1])
    with pytest.raises(ValueError, match="exceed"):
        captioner[1].generate(pixels, max_new_tokens=100)
    with pytest.raises(ValueError, match="share_encoder_decoder needs"):
        vlkit.create_model("blip-tiny", text_decoder=False, share_encoder_decoder=True)
    with pytest.raises(ValueError, match="bos_token_id"):
        vlkit.create_model("blip-tiny", text=dict(bos_token_id=40000))


def test_wrong_architecture_is_refused(tmp_path):
    torch.manual_seed(0)
    ref = transformers.BlipForConditionalGeneration(_hf_config())
    folder = save_hf(ref, tmp_path)
    import json

    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["BlipModel"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="BlipModel"):
        vlkit.from_pretrained(folder)


def test_presets():
    from vlkit.models.registry import PRESETS

    c = PRESETS["blip-base"]()  # config only: building 220M parameters is slow on 2 cores
    assert (c.vision.image_size, c.vision.patch_size, c.vision.width, c.vision.depth) == (384, 16, 768, 12)
    assert (c.text.hidden_size, c.text.num_layers, c.text.vocab_size, c.embed_dim) == (768, 12, 30524, 256)
    assert c.share_encoder_decoder and not c.vision.pre_norm and c.vision.patch_bias
    tiny = vlkit.create_model("blip-tiny")
    assert (
        tiny.config.text.hidden_size <= 64 and tiny.config.text.num_layers == 2 and tiny.config.vision.image_size <= 64
    )
