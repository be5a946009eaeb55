"""tokenizer.json of Llama-family checkpoints (byte-level BPE as Llama 3, SmolLM and Qwen2 have it),
built with HF ``tokenizers`` and read by vlkit: the same ids for the same text."""

from __future__ import annotations

from pathlib import Path

import pytest

import vlkit

tk = pytest.importorskip("tokenizers")

# Llama 3's split regex (Qwen2's differs in taking digits one at a time)
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
SPECIALS = {
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"],
    "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
TEXTS = [
    "Hello world 2024, don't  stop; I'LL go!\n\n  indented\tline",
    "Héllo wörld 1234567 你好 😀 <|im_end|><|eot_id|> e\u0301 café",
    "   leading spaces and trailing   ",
    "x=3.14159*(a+b)//2 # comment\r\nnext",
    "",
]


def _corpus() -> list[str]:
    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text(encoding="utf-8")
    return readme.splitlines()[:300] + TEXTS


def _build(style: str, corpus: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style == "smollm")
    if style == "smollm":  # StarCoder/SmolLM: digits one by one, then GPT-2's regex
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        split = pre_tokenizers.Split(Regex(LLAMA3 if style == "llama3" else QWEN2), behavior="isolated")
        tok.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS[style], initial_alphabet=alphabet)
    )
    post = processors.ByteLevel(trim_offsets=False)
    if style == "llama3":  # Llama 3 starts every text with <|begin_of_text|>
        bos = ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))
        template = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[bos])
        post = processors.Sequence([post, template])
    tok.post_processor = post
    return tok


@pytest.fixture(scope="module", params=sorted(SPECIALS))
def built(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    ref = _build(request.param, _corpus())
    ref.save(str(folder / "tokenizer.json"))
    return request.param, ref, folder


def test_same_ids_as_hf_tokenizers(built):
    style, ref, folder = built
    ours = vlkit.get_tokenizer(str(folder))
    assert ours.vocab_size == ref.get_vocab_size()
    for text in TEXTS:
        assert ours.encode(text, add_special_tokens=True) == ref.encode(text).ids, (style, text)
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids, (style, text)
        ids = ref.encode(text).ids
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False)
        assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids)
    for special in SPECIALS[style]:  # special tokens written in the text stay whole
        assert ours.encode(f"a{special}b").count(ref.token_to_id(special)) == 1


def test_saved_tokenizer_reads_back_in_hf_tokenizers(built, tmp_path):
    """vlkit writes the pre-tokenizers it read (digits, split regex) back into tokenizer.json."""
    from tokenizers import Tokenizer

    style, ref, folder = built
    ours = vlkit.get_tokenizer(str(folder))
    ours.save(tmp_path)
    again = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in TEXTS:
        assert again.encode(text, add_special_tokens=False).ids == ref.encode(text, add_special_tokens=False).ids
    assert vlkit.get_tokenizer(str(tmp_path)).encode(TEXTS[1]) == ours.encode(TEXTS[1])


def test_digits_grouped_are_refused(tmp_path):
    from tokenizers import pre_tokenizers

    ref = _build("smollm", TEXTS)
    ref.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    ref.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="individual_digits=true only"):
        vlkit.get_tokenizer(str(tmp_path))


# ---------------------------------------------------------------- SentencePiece-style BPE (Llama 2, TinyLlama, Mistral)


def _build_sentencepiece(style: str, corpus: list[str]):
    """A Llama 2 style tokenizer.json: <unk> <s> </s>, the 256 byte tokens, then the learned pieces;
    ``legacy``: Prepend + Replace normalizer, ``metaspace``: the Metaspace pre-tokenizer."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if style == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, limit_alphabet=60))
    doc = json.loads(tok.to_str())
    order = sorted(doc["model"]["vocab"], key=doc["model"]["vocab"].get)
    tokens = order[:3] + [f"<0x{b:02X}>" for b in range(256)] + order[3:]  # byte tokens as in Llama 2's layout
    doc["model"]["vocab"] = {t: i for i, t in enumerate(tokens)}
    doc["added_tokens"] = [dict(a, id=tokens.index(a["content"])) for a in doc["added_tokens"]]
    tok = Tokenizer.from_str(json.dumps(doc))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


SP_TEXTS = [*TEXTS, "<s>after a special token</s> x", "Ünïcödé ÆØÅ ﬁ 𝔘"]


@pytest.mark.parametrize("style", ["legacy", "metaspace"])
def test_sentencepiece_bpe_with_byte_fallback(style, tmp_path):
    from tokenizers import Tokenizer

    from vlkit.tokenizers import SentencePieceBPETokenizer

    ref = _build_sentencepiece(style, _corpus())
    ref.save(str(tmp_path / "tokenizer.json"))
    ours = vlkit.get_tokenizer(str(tmp_path))
    assert isinstance(ours, SentencePieceBPETokenizer) and ours.special_tokens["bos"] == "<s>"
    fallback = 0
    for text in SP_TEXTS:
        ids = ref.encode(text).ids
        assert ours.encode(text, add_special_tokens=True) == ids, (style, text)
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=False), (style, text)
        fallback += sum(3 <= i < 259 for i in ids)
    assert fallback > 10  # the texts do reach the byte tokens
    ours.save(tmp_path / "saved")  # vlkit's files and tokenizer.json, both read back to the same ids
    again = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))
    reloaded = vlkit.get_tokenizer(str(tmp_path / "saved"))
    for text in SP_TEXTS:
        assert again.encode(text, add_special_tokens=False).ids == ours.encode(text) == reloaded.encode(text)
