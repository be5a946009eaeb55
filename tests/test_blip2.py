"""BLIP-2: the Q-Former's stage-1 masks against hand-written answers; parity with HF transformers
(random tiny models, float32: LM logits, greedy and beam continuations, ITM logits, ITC features)
for several query counts, cross-attention frequencies and widths; HF round trip; left-padded batched
generation equal to one prompt at a time; the image-placeholder trap refused; frozen parts."""

import pytest
import torch

import vlkit
from helpers import max_diff, save_hf
from vlkit.convert.hf_export import save_hf as export_hf
from vlkit.models import Blip2Config, itc_scores
from vlkit.models.qformer import itc_mask, itg_mask, itm_mask, qformer_mask

transformers = pytest.importorskip("transformers")
V_QF, V_LM, BOS, EOS = 99, 120, 1, 2
IMAGE_TOKEN = V_LM - 1  # the placeholder HF's BLIP-2 expects in input_ids (last id of the LLM's vocabulary)

# (query tokens, cross-attention frequency, Q-Former layers, Q-Former width, LLM, LLM width); the
# published checkpoints' layout is the first: OPT, cross-attention every second layer
SHAPES = {"q4-f2-opt": (4, 2, 3, 32, "opt", 40), "q6-f1-gpt2": (6, 1, 2, 48, "gpt2", 32)}
PAD = 0


# --- masks: hand-written answers, 2 queries + 3 text tokens (rows: who looks, columns: at whom) ---
def _rows(*rows: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


def test_itc_mask_is_unimodal():
    assert torch.equal(itc_mask(2, 3), _rows("11000", "11000", "00111", "00111", "00111"))


def test_itm_mask_is_bidirectional():
    assert torch.equal(itm_mask(2, 3), _rows("11111", "11111", "11111", "11111", "11111"))


def test_itg_mask_queries_see_queries_text_is_causal():
    assert torch.equal(itg_mask(2, 3), _rows("11000", "11000", "11100", "11110", "11111"))


def test_qformer_mask_hides_text_padding():
    mask = qformer_mask("itg", 2, torch.tensor([[1, 1, 0]]), 3)  # the last text token is padding
    assert mask.shape == (1, 1, 5, 5)
    assert torch.equal(mask[0, 0], _rows("11000", "11000", "11100", "11110", "11110"))
    empty = qformer_mask("itc", 2, torch.tensor([[0, 0, 0]]), 3)  # text rows that would see nothing
    assert torch.equal(empty[0, 0], _rows("11000", "11000", "11111", "11111", "11111"))  # see all (never read)
    with pytest.raises(ValueError, match="mode"):
        qformer_mask("mlm", 2, None, 3)


# --- HF models ------------------------------------------------------------------------------------
def _hf_config(shape: str, *, retrieval: bool = False, text_input: bool | None = None):
    Q, freq, layers, width, llm, lm_width = SHAPES[shape]
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)  # fmt: skip
    qformer = dict(hidden_size=width, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                   cross_attention_frequency=freq, vocab_size=V_QF, max_position_embeddings=32,
                   use_qformer_text_input=retrieval if text_input is None else text_input)  # fmt: skip
    if llm == "opt":
        text = transformers.OPTConfig(vocab_size=V_LM, hidden_size=lm_width, word_embed_proj_dim=lm_width,
                                      num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                                      max_position_embeddings=64, bos_token_id=BOS, eos_token_id=EOS,
                                      pad_token_id=PAD)  # fmt: skip
    else:
        text = transformers.GPT2Config(vocab_size=V_LM, n_embd=lm_width, n_layer=2, n_head=2, n_positions=64,
                                       bos_token_id=BOS, eos_token_id=EOS)  # fmt: skip
    return transformers.Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                                    num_query_tokens=Q, image_text_hidden_size=24,
                                    image_token_index=None if retrieval else IMAGE_TOKEN)  # fmt: skip


def _build(folder, arch: str, shape: str):
    """A random HF model (every parameter perturbed so that each matters) and vlkit's load of it."""
    torch.manual_seed(0)
    ref = getattr(transformers, arch)(_hf_config(shape, retrieval=arch == "Blip2ForImageTextRetrieval")).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return ref, vlkit.from_pretrained(save_hf(ref, folder / arch))


@pytest.fixture(scope="module", params=sorted(SHAPES))
def captioner(request, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("blip2"), "Blip2ForConditionalGeneration", request.param)


@pytest.fixture(scope="module", params=sorted(SHAPES))
def retrieval(request, tmp_path_factory):
    return _build(tmp_path_factory.mktemp("blip2"), "Blip2ForImageTextRetrieval", request.param)


def _pixels(b=3):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _prompts(b=3, t=5, vocab=IMAGE_TOKEN):
    ids = torch.randint(3, vocab, (b, t), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = BOS
    return ids


def _with_image_tokens(ids: torch.Tensor, Q: int) -> torch.Tensor:
    return torch.cat([torch.full((ids.shape[0], Q), IMAGE_TOKEN), ids], dim=1)


# --- stage 2: LM logits and generation ------------------------------------------------------------
def test_lm_logits_match_transformers(captioner):
    ref, model = captioner
    Q = model.config.qformer.num_query_tokens
    assert not model.config.qformer.text_input
    assert model.config.llm_type == {"opt": "opt", "gpt2": "gpt"}[ref.config.text_config.model_type]
    pixels, ids = _pixels(), _prompts()
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0  # right padding
    with torch.no_grad():
        expected = ref(pixel_values=pixels, input_ids=_with_image_tokens(ids, Q),
                       attention_mask=torch.cat([torch.ones(3, Q, dtype=torch.long), mask], 1)).logits  # fmt: skip
        got = model(pixels, ids, mask)
    assert got.shape == (3, ids.shape[1], V_LM)
    assert max_diff(got[0], expected[0, Q:]) <= 1e-4
    assert max_diff(got[1, :3], expected[1, Q : Q + 3]) <= 1e-4  # the real tokens of the padded row
    assert max_diff(got[2], expected[2, Q:]) <= 1e-4


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generation_matches_transformers(captioner, num_beams):
    ref, model = captioner
    Q = model.config.qformer.num_query_tokens
    pixels, ids = _pixels(2), _prompts(2, 3)
    options = dict(max_new_tokens=6, num_beams=num_beams, min_new_tokens=2)
    with torch.no_grad():
        expected = ref.generate(pixel_values=pixels, input_ids=_with_image_tokens(ids, Q), do_sample=False, **options)
    got = model.generate(pixels, ids, **options)
    assert torch.equal(got, expected[:, Q:])
    no_prompt = model.generate(pixels, max_new_tokens=5, num_beams=num_beams)  # BOS alone
    with torch.no_grad():
        ref_no_prompt = ref.generate(pixel_values=pixels, max_new_tokens=5, num_beams=num_beams, do_sample=False)
    assert torch.equal(no_prompt, ref_no_prompt[:, Q:])


def test_left_padded_batch_generates_as_one_prompt_at_a_time(captioner):
    _, model = captioner
    pixels = _pixels(3)
    rows = [_prompts(1, t)[0] for t in (2, 5, 4)]
    width = max(len(r) for r in rows)
    ids = torch.full((3, width), PAD, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :], mask[i, width - len(r) :] = r, 1
    for num_beams in (1, 2):
        batch = model.generate(pixels, ids, mask, max_new_tokens=5, num_beams=num_beams, eos_token_id=None)
        for i, r in enumerate(rows):
            alone = model.generate(pixels[i : i + 1], r[None], max_new_tokens=5, num_beams=num_beams, eos_token_id=None)
            assert torch.equal(batch[i, width - len(r) :], alone[0])


def test_image_placeholder_in_input_ids_is_an_error(captioner):
    _, model = captioner
    ids = _with_image_tokens(_prompts(1), model.config.qformer.num_query_tokens)
    with pytest.raises(ValueError, match="placeholder"):
        model(_pixels(1), ids)
    with pytest.raises(ValueError, match="placeholder"):
        model.generate(_pixels(1), ids, max_new_tokens=2)
    with pytest.raises(ValueError, match="vocabulary"):
        model(_pixels(1), torch.tensor([[BOS, V_LM]]))


def test_blip2_model_folder_loads_the_same_weights(captioner, tmp_path):
    ref, model = captioner
    base = transformers.Blip2Model(ref.config).eval()
    base.load_state_dict(ref.state_dict(), strict=False)
    loaded = vlkit.from_pretrained(save_hf(base, tmp_path / "base"))
    Q = model.config.qformer.num_query_tokens
    pixels, ids = _pixels(2), _prompts(2)
    with torch.no_grad():
        expected = base(pixel_values=pixels, input_ids=_with_image_tokens(ids, Q)).logits[:, Q:]
        assert max_diff(loaded(pixels, ids), expected) <= 1e-4
        assert max_diff(loaded(pixels, ids), model(pixels, ids)) == 0.0


# --- retrieval: ITC features and ITM logits -------------------------------------------------------
def test_itc_and_itm_match_transformers(retrieval):
    ref, model = retrieval
    pixels, ids = _pixels(3), _prompts(3, 6, vocab=V_QF)
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    with torch.no_grad():
        itm = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
        itc = ref(pixel_values=pixels, input_ids=ids, attention_mask=mask, use_image_text_matching_head=False)
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(ids, mask, normalize=True)
        assert image.shape == (3, model.config.qformer.num_query_tokens, 24) and text.shape == (3, 24)
        assert max_diff(model.itm_logits(pixels, ids, mask), itm.logits_per_image) <= 1e-5
        assert max_diff(image, itc.image_embeds) <= 1e-5
        assert max_diff(text, itc.text_embeds) <= 1e-5
        # HF scores image i against text i (its diagonal): the best query's cosine
        assert max_diff(itc_scores(image, text).diagonal(), itc.logits_per_image.diagonal()) <= 1e-5


# --- writing back ---------------------------------------------------------------------------------
def _round_trip(ref, model, folder):
    out = export_hf(model, folder)
    back = type(ref).from_pretrained(out).eval()
    for key, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert torch.equal(vlkit.from_pretrained(out).qformer.query_tokens, model.qformer.query_tokens)


def test_captioner_round_trip_to_transformers(captioner, tmp_path):
    _round_trip(*captioner, tmp_path / "cap")


def test_retrieval_round_trip_to_transformers(retrieval, tmp_path):
    _round_trip(*retrieval, tmp_path / "ret")


def test_captioner_with_retrieval_heads_writes_two_folders(tmp_path):
    model = vlkit.create_model("blip2-tiny", image_token_id=999, itg_head=True).eval()
    out = export_hf(model, tmp_path / "both")  # (HF has no ITG head: it is left out)
    from safetensors.torch import load_file

    for folder in (out, out / "retrieval"):
        assert not [k for k in load_file(folder / "model.safetensors") if "itg" in k or k == "temp"]
    cap = transformers.Blip2ForConditionalGeneration.from_pretrained(out).eval()
    ret = transformers.Blip2ForImageTextRetrieval.from_pretrained(out / "retrieval").eval()
    pixels, ids = _pixels(2), torch.randint(3, 900, (2, 4))
    Q = model.config.qformer.num_query_tokens
    with torch.no_grad():
        lm = cap(pixel_values=pixels, input_ids=torch.cat([torch.full((2, Q), 999), ids], 1)).logits[:, Q:]
        assert max_diff(model(pixels, ids), lm) <= 1e-4
        itm = ret(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                  use_image_text_matching_head=True).logits_per_image  # fmt: skip
        assert max_diff(model.itm_logits(pixels, ids), itm) <= 1e-5
    with pytest.raises(ValueError, match="image_token_id"):
        export_hf(vlkit.create_model("blip2-tiny"), tmp_path / "no-token")


# --- configs and frozen parts ---------------------------------------------------------------------
def test_t5_is_refused_by_name():
    with pytest.raises(ValueError, match="T5"):
        Blip2Config(llm_type="t5", llm={})
    config = _hf_config("q4-f2-opt").to_dict()
    config["text_config"] = {"model_type": "t5"}
    from vlkit.convert import hf_blip2

    with pytest.raises(ValueError, match="T5"):
        hf_blip2.config_from_hf(config, {"language_model.shared.weight": torch.zeros(1)})


def test_config_round_trips_through_a_vlkit_folder(tmp_path):
    model = vlkit.create_model("blip2-tiny", llm={"num_layers": 3})
    loaded = vlkit.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config == model.config and loaded.config.llm.num_layers == 3
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_freeze_names_the_frozen_parts_and_keeps_them_in_eval():
    model = vlkit.create_model("blip2-tiny")
    total = model.parameter_counts()["total"]
    assert model.parameter_counts()["trainable"] == total
    assert set(model.freeze().frozen_modules()) == {"vision", "language_model"}
    frozen = sum(p.numel() for m in model.frozen_modules().values() for p in m.parameters())
    assert model.parameter_counts() == {"trainable": total - frozen, "total": total}
    model.train()
    assert model.qformer.training and not model.vision.training and not model.language_model.training
    logits = model(_pixels(2), torch.randint(1, 900, (2, 4)))
    logits.sum().backward()
    assert model.qformer.query_tokens.grad is not None and model.language_projection.weight.grad is not None
    assert all(p.grad is None for m in model.frozen_modules().values() for p in m.parameters())


def test_the_papers_trainable_parameter_count():
    """BLIP-2 with ViT-g and OPT-2.7B trains 188M parameters (the paper), counted on the meta device."""
    with torch.device("meta"):
        model = vlkit.create_model("blip2-opt-2.7b").freeze()
    counts = model.parameter_counts()
    assert round(counts["trainable"] / 1e6) == 188 and round(counts["total"] / 1e9, 1) == 3.8


def test_frozen_parts_in_bf16_train_the_qformer_in_float32():
    model = vlkit.create_model("blip2-tiny").freeze().cast_frozen(torch.bfloat16)
    assert model.vision.cls_token.dtype == torch.bfloat16 and model.qformer.query_tokens.dtype == torch.float32
    model.train()
    pixels, ids = _pixels(2), torch.randint(1, 900, (2, 4))
    logits = model(pixels, ids)
    assert logits.shape == (2, 4, 1000) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert model.qformer.query_tokens.grad is not None and model.qformer.query_tokens.grad.dtype == torch.float32
    assert model.generate(pixels, ids, max_new_tokens=3).shape[0] == 2
    assert model.itm_logits(pixels, ids).dtype == torch.float32


def test_training_steps_leave_the_frozen_weights_bit_identical():
    from vlkit.losses.lm import lm_labels, lm_loss
    from vlkit.train.optim import build_optimizer

    torch.manual_seed(0)
    model = vlkit.create_model("blip2-tiny").freeze().train()
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("vision.", "language_model."))}
    queries = model.qformer.query_tokens.detach().clone()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    pixels, ids = _pixels(4), torch.randint(1, 900, (4, 6), generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        loss = lm_loss(model(pixels, ids), lm_labels(ids, prompt_length=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())
    assert not torch.equal(model.qformer.query_tokens, queries)  # the Q-Former learned
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_optimizer == trainable and {id(p) for p in optimizer.state} <= trainable  # (unused heads get no state)
    assert id(model.qformer.query_tokens) in {id(p) for p in optimizer.state}
    assert sum(p.numel() for p in model.parameters() if id(p) in in_optimizer) == model.parameter_counts()["trainable"]


def test_itg_logits_are_causal_and_read_the_image():
    model = vlkit.create_model("blip2-tiny", itg_head=True).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # an untrained Q-Former barely reads the image
    pixels, ids = _pixels(2), torch.randint(1, 900, (2, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model.itg_logits(pixels, ids)
        changed = ids.clone()
        changed[:, 4:] = 7
        assert logits.shape == (2, 6, 1000)
        assert max_diff(model.itg_logits(pixels, changed)[:, :4], logits[:, :4]) <= 1e-6  # later text unseen
        assert max_diff(model.itg_logits(pixels, changed)[:, 4:], logits[:, 4:]) > 1e-3
        assert max_diff(model.itg_logits(pixels.flip(0), ids), logits) > 1e-3  # the queries carry the image
    assert vlkit.create_model("blip2-tiny").itg_head is None


def test_captioner_with_qformer_text_input_reads_queries_only(tmp_path):
    """A Blip2ForConditionalGeneration built with use_qformer_text_input=True holds a text
    feed-forward its captioning never runs: vlkit leaves it out and matches the logits."""
    torch.manual_seed(0)
    ref = transformers.Blip2ForConditionalGeneration(_hf_config("q4-f2-opt", text_input=True)).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model = vlkit.from_pretrained(save_hf(ref, tmp_path / "cap"))
    assert not model.config.qformer.text_input
    pixels, ids = _pixels(2), _prompts(2)
    with torch.no_grad():
        expected = ref(pixel_values=pixels, input_ids=_with_image_tokens(ids, 4)).logits[:, 4:]
        assert max_diff(model(pixels, ids), expected) <= 1e-4
