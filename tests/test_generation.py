"""Decoding: GPT on the KV cache (cached = uncached logits), the sampling filters, beam search and
minimum lengths on a scripted step function with known answers, GenerationConfig validation."""

import pytest
import torch

import vlkit
from vlkit.layers import KVCache
from vlkit.models import GenerationConfig
from vlkit.models.generation import _warp, generate_tokens


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return vlkit.create_model("gpt-tiny", dropout=0.0).eval()


def test_cached_and_uncached_logits_equal(gpt):
    ids = torch.randint(1, 1000, (2, 12))
    with torch.no_grad():
        full = gpt(ids)  # (B, T, V)
        cache = KVCache(gpt.config.num_layers)
        steps = [gpt.logits(gpt.hidden_states(ids[:, :5], cache=cache))]
        for t in range(5, 12):
            steps.append(gpt.logits(gpt.hidden_states(ids[:, t : t + 1], cache=cache)))
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-5


def test_greedy_generate_equals_argmax_loop_without_cache(gpt):
    ids = torch.randint(1, 1000, (2, 4))
    out = gpt.generate(ids, max_new_tokens=8, eos_token_id=None)
    ref = ids
    with torch.no_grad():
        for _ in range(8):
            ref = torch.cat([ref, gpt(ref)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)
    assert torch.equal(out[:, :4], ids)  # prompt first


def test_eos_stops_and_pads(gpt):
    ids = torch.randint(1, 1000, (1, 3))
    first = gpt.generate(ids, max_new_tokens=1, eos_token_id=None)[0, -1].item()
    out = gpt.generate(ids, max_new_tokens=10, eos_token_id=first)
    assert out.shape == (1, 4) and out[0, -1].item() == first


def test_sampling_reproducible_and_respects_top_k(gpt):
    ids = torch.randint(1, 1000, (3, 4))
    a = gpt.generate(ids, 10, do_sample=True, top_k=5, generator=torch.Generator().manual_seed(0), eos_token_id=None)
    b = gpt.generate(ids, 10, do_sample=True, top_k=5, generator=torch.Generator().manual_seed(0), eos_token_id=None)
    assert torch.equal(a, b)
    with torch.no_grad():
        logits = gpt(a[:, :-1])[:, 3:]  # the distributions the new tokens were drawn from
    top5 = logits.topk(5, dim=-1).indices
    assert (top5 == a[:, 4:, None]).any(-1).all()


def test_warp_known_answers():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda s: torch.isfinite(s)[0].tolist()
    assert kept(_warp(logits, 1.0, 2, 1.0)) == [True, True, False, False]
    assert kept(_warp(logits, 1.0, 0, 0.7)) == [True, True, False, False]  # 0.5 + 0.3 >= 0.7
    assert kept(_warp(logits, 1.0, 0, 0.5)) == [True, False, False, False]
    assert kept(_warp(logits, 1.0, 0, 0.81)) == [True, True, True, False]
    assert kept(_warp(logits, 1.0, 0, 1.0)) == [True] * 4
    hot = _warp(logits, 0.5, 0, 1.0).softmax(-1)
    assert hot[0, 0] > 0.5  # lower temperature sharpens


def test_generate_errors(gpt):
    with pytest.raises(ValueError, match="positions"):
        gpt.generate(torch.ones(1, 100, dtype=torch.long), max_new_tokens=100)
    with pytest.raises(ValueError, match="non-empty"):
        gpt.generate(torch.ones(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        gpt.generate(torch.ones(1, 2, dtype=torch.long), 2, do_sample=True, temperature=0.0)


def test_min_new_tokens_on_gpt_equals_a_masked_argmax_loop(gpt):
    ids = torch.randint(1, 1000, (2, 4))
    eos = gpt.generate(ids[:1], max_new_tokens=1, eos_token_id=None)[0, -1].item()  # row 0 would end at once
    out = gpt.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0, min_new_tokens=3)
    ref, finished = ids, torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        for i in range(6):
            logits = gpt(ref)[:, -1]
            if i < 3:
                logits[:, eos] = -float("inf")
            nxt = torch.where(finished, 0, logits.argmax(-1))
            finished |= nxt == eos
            ref = torch.cat([ref, nxt[:, None]], dim=1)
            if finished.all():
                break
    assert torch.equal(out, ref)
    assert not (out[:, 4:7] == eos).any()
    same = gpt.generate(ids, max_new_tokens=6, eos_token_id=eos, pad_token_id=0, min_length=4 + 3)
    assert torch.equal(same, out)  # min_length counts the prompt


# --- a scripted decoder: known log-probabilities, so the winner of every search is known ----------
class ScriptedStep:
    """A fake step function: the next-token probabilities are ``script(generated, prompt)``, a
    function of the tokens written after the prompt (and of the prompt). It keeps the sequences itself (its "cache") and
    reorders them with the beams."""

    def __init__(self, script, prompt_len: int):
        self.script, self.prompt_len, self.seqs = script, prompt_len, None

    def __call__(self, new_ids: torch.Tensor) -> torch.Tensor:
        self.seqs = new_ids if self.seqs is None else torch.cat([self.seqs, new_ids], dim=1)
        rows = [row.tolist() for row in self.seqs]
        probs = torch.stack([self.script(tuple(r[self.prompt_len :]), tuple(r[: self.prompt_len])) for r in rows])
        return (probs / probs.sum(-1, keepdim=True)).log()  # (N, V) logits

    def reorder(self, index: torch.Tensor) -> None:
        if self.seqs is not None:
            self.seqs = self.seqs.index_select(0, index)


EOS, A, B = 0, 1, 2
PROMPT = torch.tensor([[5, 6, 7]])  # 3 tokens: a length penalty on the whole length would be caught


def _run(script, config: GenerationConfig, prompt: torch.Tensor = PROMPT) -> list[int]:
    out = generate_tokens(ScriptedStep(script, prompt.shape[1]), prompt, config.with_model_tokens(EOS, None))
    return out[0, prompt.shape[1] :].tolist()


def _short_or_long(p_long: float, vocab: int = 128):
    """First step: [EOS] with p 0.4 (a 1-token hypothesis, log p = -0.92), B with 0.55 (a path to
    nowhere: uniform afterwards), A with ``p_long``, after which A A EOS are near certain (a 4-token
    hypothesis, log p = log p_long - 0.03)."""

    def script(gen: tuple[int, ...], prompt: tuple[int, ...]) -> torch.Tensor:
        p = torch.full((vocab,), 1e-9, dtype=torch.float64)
        if gen == ():
            p[EOS], p[A], p[B] = 0.4, p_long, 0.55
        elif gen in ((A,), (A, A)):
            p[A] = 0.99
            p[B:] = 0.01 / (vocab - 2)
        elif gen == (A, A, A):
            p[EOS] = 0.99
            p[A:] = 0.01 / (vocab - 1)
        else:
            p[A:] = 1 / (vocab - 1)
        return p

    return script


SHORT, LONG = [EOS], [A, A, A, EOS]


@pytest.mark.parametrize(
    "p_long, length_penalty, winner",
    [
        # log p: short -0.92, long -3.03; scores are log p / new_length ** length_penalty
        (0.05, 0.0, SHORT),  # -0.92 > -3.03
        (0.05, 1.0, LONG),  # -0.92 < -3.03 / 4 = -0.76 (a flipped sign: -3.03 * 4)
        (0.05, 2.0, LONG),  # -0.92 < -3.03 / 16 = -0.19
        # log p: long -4.99
        (0.0069, 0.0, SHORT),
        (0.0069, 1.0, SHORT),  # -0.92 > -4.99 / 4 = -1.25
        (0.0069, 2.0, LONG),  # -0.92 < -4.99 / 16 = -0.31
    ],
)
def test_length_penalty_picks_between_finished_beams_of_different_lengths(p_long, length_penalty, winner):
    config = GenerationConfig(num_beams=2, max_new_tokens=6, length_penalty=length_penalty)
    assert _run(_short_or_long(p_long), config) == winner


def _eager_end(gen: tuple[int, ...], prompt: tuple[int, ...]) -> torch.Tensor:
    """EOS is the best token at every step (0.6), then A (0.3), then B (0.1)."""
    return torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)


@pytest.mark.parametrize("num_beams", [1, 2, 3])
@pytest.mark.parametrize(
    "options, expected",
    [
        (dict(), [EOS]),
        (dict(min_new_tokens=1), [A, EOS]),
        (dict(min_new_tokens=3), [A, A, A, EOS]),
        (dict(min_length=3), [EOS]),  # the prompt already has 3 tokens
        (dict(min_length=4), [A, EOS]),
        (dict(min_length=6), [A, A, A, EOS]),
        (dict(min_length=6, min_new_tokens=4), [A, A, A, A, EOS]),  # the stricter one holds
    ],
)
def test_end_token_right_at_the_minimum_length(num_beams, options, expected):
    config = GenerationConfig(num_beams=num_beams, max_new_tokens=6, **options)
    assert _run(_eager_end, config) == expected


def test_finished_rows_are_padded_and_the_others_run_to_max_new_tokens():
    def script(gen, prompt):  # rows whose prompt ends in 7 end at once, the others never
        return _eager_end(gen, prompt) if prompt[-1] == 7 else torch.tensor([1e-9, 0.6, 0.4], dtype=torch.float64)

    prompts = torch.tensor([[5, 6, 7], [5, 6, 8]])
    for num_beams, pad in ((1, 9), (2, 9), (1, None)):
        config = GenerationConfig(max_new_tokens=4, num_beams=num_beams).with_model_tokens(EOS, pad)
        out = generate_tokens(ScriptedStep(script, 3), prompts, config)
        fill = EOS if pad is None else pad
        assert out[:, 3:].tolist() == [[EOS, fill, fill, fill], [A, A, A, A]]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_beams=0), "num_beams must be >= 1, got 0"),
        (dict(num_beams=-2), "num_beams must be >= 1"),
        (dict(top_p=-0.1), r"top_p must be in \(0, 1\]"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(top_k=-1), "top_k must be >= 0"),
        (dict(max_new_tokens=-1), "max_new_tokens must be >= 0"),
        (dict(max_new_tokens=3, min_new_tokens=4), "min_new_tokens=4 exceeds max_new_tokens=3"),
        (dict(min_length=-1), "min_length must be >= 0"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be > 0"),
        (dict(temperature=float("nan")), "temperature must be a number"),
        (dict(num_beams=2, do_sample=True), "beam search does not sample"),
        (dict(eos_token_id=-3), "eos_token_id must be a token id"),
        (dict(pad_token_id="eos"), "pad_token_id must be a token id"),
    ],
)
def test_generation_config_validation(options, message):
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**options)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_beams=2.0), "num_beams must be an integer"),
        (dict(top_p="0.9"), "top_p must be a number"),
        (dict(do_sample=1), "do_sample must be True or False"),
    ],
)
def test_generation_config_type_errors(options, message):
    with pytest.raises(TypeError, match=message):
        GenerationConfig(**options)


def test_generate_validates_its_options(gpt):
    ids = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        gpt.generate(ids, 2, num_beams=0)
    with pytest.raises(ValueError, match="top_p"):
        gpt.generate(ids, 2, do_sample=True, top_p=-0.5)
    with pytest.raises(ValueError, match="num_beams must be >= 1"):
        gpt.generate(ids, generation_config=GenerationConfig(max_new_tokens=2), num_beams=0)
    with pytest.raises(TypeError, match="unknown generation option.*beams"):
        gpt.generate(ids, 2, beams=3)
    with pytest.raises(TypeError, match="GenerationConfig"):
        gpt.generate(ids, generation_config=dict(num_beams=2))


def test_generation_config_and_overrides(gpt):
    assert vlkit.GenerationConfig is GenerationConfig
    config = GenerationConfig(max_new_tokens=5, num_beams=3)
    assert config.replace(num_beams=1) == GenerationConfig(max_new_tokens=5)
    assert config.with_model_tokens(7, None).eos_token_id == 7
    assert GenerationConfig(eos_token_id=None).with_model_tokens(7, 0).eos_token_id is None
    assert GenerationConfig(top_k=None, top_p=None) == GenerationConfig(top_k=0, top_p=1.0)  # transformers' "off"
    ids = torch.randint(1, 1000, (2, 3))
    a = gpt.generate(ids, generation_config=config, eos_token_id=None)
    b = gpt.generate(ids, 5, num_beams=3, eos_token_id=None)
    assert torch.equal(a, b) and a.shape == (2, 8)
    assert torch.equal(gpt.generate(ids, 0), ids)


def test_cli_names_the_flag_of_a_bad_option(tmp_path, capsys):
    from vlkit.cli import main

    image = tmp_path / "x.png"
    for flags, message in (
        (["--num-beams", "0"], "--num-beams must be >= 1, got 0"),
        (["--sample", "--top-p", "-0.5"], "--top-p must be in (0, 1]"),
        (["--min-new-tokens", "30"], "--min-new-tokens=30 exceeds --max-new-tokens=20"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ):
        assert main(["caption", "--model", str(tmp_path / "none"), str(image), *flags]) == 2
        assert f"vlkit caption: error: {message}" in capsys.readouterr().err
    assert main(["vqa", "--model", str(tmp_path / "none"), str(image), "what?", "--num-beams", "-1"]) == 2
    assert "--num-beams must be >= 1, got -1" in capsys.readouterr().err


def test_cli_min_new_tokens_keeps_the_caption_going(tmp_path, capsys):
    from PIL import Image

    from vlkit.cli import main

    torch.manual_seed(0)
    model = vlkit.create_model("blip-tiny", text_encoder=False, retrieval_heads=False)
    with torch.no_grad():
        model.lm_head.bias[model.config.text.sep_token_id] += 50.0  # [SEP] wins whenever it may
    folder = str(model.save_pretrained(tmp_path / "blip"))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    captions = []
    for flags in (["--min-length", "0"], ["--min-length", "0", "--min-new-tokens", "3"]):
        assert main(["caption", "--model", folder, str(image), "--num-beams", "2", *flags]) == 0
        captions.append(capsys.readouterr().out.strip("\n").split("\t")[1])
    pixels = vlkit.image_transform(model)(Image.open(image))[None]
    ids = model.generate(pixels, num_beams=2, min_new_tokens=3)
    assert ids.shape == (1, 1 + 3 + 1)  # [DEC], three words, [SEP]
    tok = vlkit.get_tokenizer("bert-base-uncased")
    assert captions == ["", tok.decode(ids[0, 1:4].tolist(), skip_special_tokens=True).strip()]
    assert captions[1]


def test_generation_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    gpt = vlkit.create_model("gpt-tiny", dropout=0.3)
    blip = vlkit.create_model("blip-tiny", vision=dict(dropout=0.3), text=dict(dropout=0.3))
    with torch.no_grad():
        for p in blip.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # make the image matter to the random decoder
    ids, pixels = torch.randint(1, 1000, (2, 3)), torch.randn(2, 3, 32, 32)
    for model, run in (
        (gpt, lambda: gpt.generate(ids, 6, num_beams=2)),
        (blip, lambda: blip.generate(pixels, max_new_tokens=6)),
    ):
        model.eval()
        expected = run()
        model.train()
        assert torch.equal(run(), expected)  # no dropout, in the image encoder either
        assert model.training


def test_gpt_takes_embeddings_in_place_of_ids(gpt):
    """The soft-prompt path (BLIP-2, VLMs): embed_tokens + inputs_embeds equals input_ids."""
    ids = torch.randint(0, 1000, (2, 6))
    from_ids = gpt.hidden_states(ids)
    assert torch.equal(gpt.hidden_states(inputs_embeds=gpt.embed_tokens(ids)), from_ids)
    with pytest.raises(ValueError, match="exactly one"):
        gpt.hidden_states(ids, inputs_embeds=gpt.embed_tokens(ids))
