"""HF ``tokenizer.json``: writing vlkit tokenizers in that form and reading the BPE, WordPiece and
WordLevel tokenizers it describes.

Supported when reading: the models BPE (byte-level as GPT-2/RoBERTa, Llama 3, Qwen2 and SmolLM
with their split regex and individual digits; SentencePiece-style with byte fallback as Llama 2,
TinyLlama and Mistral; or CLIP's with ``</w>``),
WordPiece (BERT normalizer and pre-tokenizer) and WordLevel (as vlkit writes it); the post
processors TemplateProcessing, BertProcessing, RobertaProcessing and ByteLevel. Anything else
raises a ValueError naming the file and the component.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..files import read_json_object
from .base import ROLES, Tokenizer
from .vocab_files import tokens_in_id_order


def hf_document(tok: Tokenizer, model: dict, *, normalizer=None, pre_tokenizer=None, decoder=None) -> dict:
    """The ``tokenizer.json`` document of ``tok`` around its model section."""
    to_id = tok.get_vocab()
    added = [
        {
            "id": to_id[t],
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t in sorted(set(tok.all_special_tokens), key=to_id.__getitem__)
    ]
    post = None
    if tok.prefix or tok.suffix:
        single = [{"SpecialToken": {"id": t, "type_id": 0}} for t in tok.prefix]
        single.append({"Sequence": {"id": "A", "type_id": 0}})
        single += [{"SpecialToken": {"id": t, "type_id": 0}} for t in tok.suffix]
        pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
        pair += [{"SpecialToken": {"id": t, "type_id": 1}} for t in tok.suffix]
        post = {
            "type": "TemplateProcessing",
            "single": single,
            "pair": pair,
            "special_tokens": {
                t: {"id": t, "ids": [to_id[t]], "tokens": [t]} for t in dict.fromkeys(tok.prefix + tok.suffix)
            },
        }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": decoder,
        "model": model,
    }


_KNOWN_ROLES = {
    "[PAD]": "pad", "[UNK]": "unk", "[CLS]": "cls", "[SEP]": "sep", "[MASK]": "mask", "[BOS]": "bos", "[EOS]": "eos",
    "<pad>": "pad", "<unk>": "unk", "<mask>": "mask", "<s>": "bos", "</s>": "eos",
    "<|endoftext|>": "eos", "<|startoftext|>": "bos",
}  # fmt: skip


def _roles_from_files(folder: Path) -> dict[str, str]:
    """Special-token roles from ``special_tokens_map.json`` / ``tokenizer_config.json`` beside it."""
    roles: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if not path.is_file():
            continue
        data = read_json_object(path, "an HF tokenizer config")
        for role in ROLES:
            value = data.get(f"{role}_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                roles[role] = value
    return roles


def _affixes(post: dict | None, where: str) -> tuple[list[str], list[str]]:
    """The special tokens a post processor puts before and after a single sequence."""
    if post is None or post.get("type") == "ByteLevel":
        return [], []
    kind = post.get("type")
    if kind == "TemplateProcessing":
        before, after, seen = [], [], False
        for piece in post.get("single", []):
            if "Sequence" in piece:
                seen = True
            elif "SpecialToken" in piece:
                (after if seen else before).append(piece["SpecialToken"]["id"])
        return before, after
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [post["cls"][0]], [post["sep"][0]]
    if kind == "Sequence":
        before, after = [], []
        for p in post.get("processors", []):
            b, a = _affixes(p, where)
            before, after = before + b, a + after
        return before, after
    raise ValueError(f"{where}: post processor {kind!r} is not supported by vlkit")


def _pre_tokenizers(spec: dict | None) -> list[dict]:
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        return [p for s in spec.get("pretokenizers", []) for p in _pre_tokenizers(s)]
    return [spec]


@dataclass
class _Parsed:
    """What a ``tokenizer.json`` says, read once, for the builder of its model type."""

    where: str  # the file, for error messages
    model: dict  # its "model" section
    tokens: list[str]  # in id order
    vocab: dict[str, int]
    roles: dict[str, str]  # role -> special token
    normalizer: dict | None
    pres: list[dict]  # the pre-tokenizers
    prefix: list[str]  # special tokens the post-processor puts before / after a text
    suffix: list[str]
    common: dict  # keyword arguments every vlkit tokenizer takes

    @property
    def pre_types(self) -> list[str | None]:
        return [p.get("type") for p in self.pres]


def tokenizer_from_hf_json(path: str | Path, context_length: int | None = None) -> Tokenizer:
    """A vlkit tokenizer equivalent to the HF ``tokenizer.json`` at ``path``."""
    path = Path(path)
    where = str(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a valid tokenizer.json: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), dict):
        raise ValueError(f"{path} is not an HF tokenizer.json (no 'model' section)")
    model = doc["model"]
    kind = model.get("type")
    if kind not in _BUILDERS:
        raise ValueError(f"{where}: model type {kind!r} is not supported by vlkit (BPE, WordPiece, WordLevel are)")
    vocab = dict(model.get("vocab") or {})
    added = doc.get("added_tokens") or []
    for a in added:
        if a["content"] not in vocab:
            vocab[a["content"]] = a["id"]
    roles = _special_roles(path.parent, model, vocab, added)
    extra = [a["content"] for a in added if a["content"] not in roles.values()]
    prefix, suffix = _affixes(doc.get("post_processor"), where)
    common = dict(prefix=prefix, suffix=suffix, extra_special_tokens=extra, context_length=context_length)
    parsed = _Parsed(
        where,
        model,
        tokens_in_id_order(vocab, where),
        vocab,
        roles,
        doc.get("normalizer"),
        _pre_tokenizers(doc.get("pre_tokenizer")),
        prefix,
        suffix,
        common,
    )
    return _BUILDERS[kind](parsed)


def _special_roles(folder: Path, model: dict, vocab: dict[str, int], added: list[dict]) -> dict[str, str]:
    """Role -> token: from the folder's tokenizer_config / special_tokens_map, else guessed from
    the added special tokens' names."""
    roles = _roles_from_files(folder)
    if not roles:
        for t in (a["content"] for a in added if a.get("special", True)):
            role = _KNOWN_ROLES.get(t)
            if role is not None and role not in roles:
                roles[role] = t
        if "unk" not in roles and model.get("unk_token") in vocab:
            roles["unk"] = model["unk_token"]
        if roles.get("eos") == "<|endoftext|>" and "bos" not in roles and "<|startoftext|>" not in vocab:
            roles["bos"] = "<|endoftext|>"  # GPT-2: one token starts and ends a text
    return {r: t for r, t in roles.items() if t in vocab}


def _wordpiece(p: _Parsed) -> Tokenizer:
    from .wordpiece import WordPieceTokenizer

    if p.pre_types != ["BertPreTokenizer"]:
        raise ValueError(f"{p.where}: WordPiece needs the BertPreTokenizer, got {p.pre_types}")
    normalizer = p.normalizer
    if normalizer is None:
        normalizer = {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False, "lowercase": False}
    elif normalizer.get("type") != "BertNormalizer":
        raise ValueError(f"{p.where}: WordPiece needs the BertNormalizer, got {normalizer.get('type')!r}")
    p.roles.setdefault("unk", p.model.get("unk_token", "[UNK]"))
    return WordPieceTokenizer(
        p.tokens,
        p.roles,
        lowercase=normalizer.get("lowercase", True),
        strip_accents=normalizer.get("strip_accents"),
        clean_text=normalizer.get("clean_text", True),
        handle_chinese_chars=normalizer.get("handle_chinese_chars", True),
        continuing_prefix=p.model.get("continuing_subword_prefix") or "##",
        max_input_chars_per_word=p.model.get("max_input_chars_per_word", 100),
        **p.common,
    )


def _wordlevel(p: _Parsed) -> Tokenizer:
    from .simple import CHAR_PATTERN, WORD_PATTERN, CharTokenizer, WordTokenizer

    patterns = [x.get("pattern", {}).get("Regex") for x in p.pres if x.get("type") == "Split"]
    cls = {WORD_PATTERN: WordTokenizer, CHAR_PATTERN: CharTokenizer}.get(patterns[0] if len(patterns) == 1 else None)
    if cls is None or len(p.pres) != 1:
        raise ValueError(f"{p.where}: WordLevel is supported with vlkit's word or character split only, got {p.pres}")
    if p.normalizer not in (None, {"type": "Lowercase"}):
        raise ValueError(f"{p.where}: WordLevel normalizer {p.normalizer!r} is not supported by vlkit")
    p.roles.setdefault("unk", p.model.get("unk_token", "[UNK]"))
    return cls(p.tokens, p.roles, lowercase=p.normalizer is not None, **p.common)


def _bpe(p: _Parsed) -> Tokenizer:
    from .bpe import GPT2_PATTERN, BPETokenizer
    from .clip import END_OF_WORD

    model, where = p.model, p.where
    if model.get("dropout") is not None:
        raise ValueError(f"{where}: BPE with dropout={model.get('dropout')!r} is not supported by vlkit")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    if model.get("end_of_word_suffix") == END_OF_WORD:
        return _clip_bpe(p, merges)
    if model.get("end_of_word_suffix") or model.get("continuing_subword_prefix"):
        raise ValueError(
            f"{where}: BPE with subword prefix/suffix is not supported by vlkit (only byte-level and CLIP)"
        )
    if p.pre_types in ([], ["Metaspace"]):  # SentencePiece's layout (Llama 2, TinyLlama, Mistral)
        return _sentencepiece_bpe(p, merges)
    for key in ("byte_fallback", "fuse_unk"):
        if model.get(key) not in (False, None):
            raise ValueError(f"{where}: byte-level BPE with {key}={model.get(key)!r} is not supported by vlkit")
    pres, individual_digits = p.pres, False
    if pres and pres[0].get("type") == "Digits":
        if not pres[0].get("individual_digits", False):
            raise ValueError(f"{where}: the Digits pre-tokenizer is supported with individual_digits=true only")
        pres, individual_digits = pres[1:], True
    pre_types = [x.get("type") for x in pres]
    if "ByteLevel" not in pre_types:
        raise ValueError(f"{where}: only byte-level BPE is supported by vlkit; pre-tokenizers {pre_types}")
    byte_level = pres[pre_types.index("ByteLevel")]
    if pre_types == ["ByteLevel"] and byte_level.get("use_regex", True):
        pattern = GPT2_PATTERN
    elif pre_types == ["Split", "ByteLevel"] and not byte_level.get("use_regex", True):
        split = pres[0]
        if split.get("behavior") != "Isolated" or split.get("invert") or "Regex" not in split.get("pattern", {}):
            raise ValueError(f"{where}: Split pre-tokenizer {split} is not supported by vlkit")
        pattern = split["pattern"]["Regex"]
    else:
        raise ValueError(f"{where}: pre-tokenizers {pre_types} are not supported by vlkit")
    return BPETokenizer(
        p.tokens,
        merges,
        p.roles,
        pattern=pattern,
        add_prefix_space=byte_level.get("add_prefix_space", False),
        normalizer=p.normalizer,
        ignore_merges=bool(model.get("ignore_merges", False)),
        individual_digits=individual_digits,
        **p.common,
    )


def _sentencepiece_bpe(p: _Parsed, merges: list[tuple]) -> Tokenizer:
    from .sp_bpe import SentencePieceBPETokenizer

    p.roles.setdefault("unk", p.model.get("unk_token") or "<unk>")
    p.roles = {r: t for r, t in p.roles.items() if t in p.vocab}
    return SentencePieceBPETokenizer(
        p.tokens,
        merges,
        p.roles,
        normalizer=p.normalizer,
        metaspace=p.pres[0] if p.pres else None,
        byte_fallback=bool(p.model.get("byte_fallback", False)),
        fuse_unk=bool(p.model.get("fuse_unk", False)),
        **p.common,
    )


def _clip_bpe(p: _Parsed, merges: list[tuple]) -> Tokenizer:
    from .clip import CLIPTokenizer

    if p.pre_types != ["Split", "ByteLevel"]:
        raise ValueError(f"{p.where}: a CLIP BPE needs Split + ByteLevel pre-tokenizers, got {p.pre_types}")
    roles = dict(p.roles)
    if "bos" not in roles or "eos" not in roles:
        if len(p.prefix) == 1 and len(p.suffix) == 1:
            roles.setdefault("bos", p.prefix[0])
            roles.setdefault("eos", p.suffix[0])
        else:
            raise ValueError(f"{p.where}: cannot tell CLIP's start and end tokens")
    pad = roles.pop("pad", None)
    roles.pop("unk", None)  # CLIP's unk is its end token; every byte is in the vocabulary
    return CLIPTokenizer(
        p.tokens,
        merges,
        roles,
        clean="whitespace_lower",
        pad_id=p.vocab[pad] if pad is not None else 0,
        **{k: v for k, v in p.common.items() if k != "context_length"},
        context_length=p.common["context_length"] or 77,
    )


_BUILDERS = {"WordPiece": _wordpiece, "WordLevel": _wordlevel, "BPE": _bpe}


# ------------------------------------------------------------------ writing for HF transformers

HF_GENERIC_CLASS = "PreTrainedTokenizerFast"  # reads tokenizer.json as it is (TokenizersBackend in transformers 5)


def hf_tokenizer_class(tok: Tokenizer, preferred: str | None) -> str:
    """``preferred`` (the model family's HF tokenizer class) when that class, built from the
    vocabulary files and the settings written, splits text as ``tok`` does; else the generic class,
    which reads ``tokenizer.json`` as vlkit writes it."""
    from .bpe import GPT2_PATTERN, BPETokenizer
    from .clip import CLIPTokenizer
    from .wordpiece import WordPieceTokenizer

    roles = tok.special_tokens
    if preferred == "CLIPTokenizer":
        fits = isinstance(tok, CLIPTokenizer)
    elif preferred == "BertTokenizer":
        fits = (
            isinstance(tok, WordPieceTokenizer)
            and tok.continuing_prefix == "##"
            and tok.pre_tokenizer.clean_text
            and tok.max_input_chars_per_word == 100
            and tok.prefix == [roles.get("cls")]
            and tok.suffix == [roles.get("sep")]
        )
    elif preferred == "GPT2Tokenizer":
        fits = (
            type(tok) is BPETokenizer
            and tok.pattern == GPT2_PATTERN
            and tok.normalizer is None
            and not tok.ignore_merges
            and not tok.individual_digits
            and not tok.prefix
            and not tok.suffix
        )
    else:
        fits = False
    return preferred if fits and preferred is not None else HF_GENERIC_CLASS


def _hf_special_tokens(tok: Tokenizer, tokenizer_class: str) -> dict:
    """``<role>_token`` for every role (null where ``tok`` has none, so that no class default is
    added to the vocabulary) and the extra special tokens."""
    out: dict = {f"{role}_token": tok.special_tokens.get(role) for role in ROLES}
    if tokenizer_class == "CLIPTokenizer":  # HF's CLIP stands its end token in for unknown text and padding
        out.update(unk_token=out["eos_token"], pad_token=out["eos_token"])
    if tok.extra_special_tokens:
        out["additional_special_tokens"] = list(tok.extra_special_tokens)
    return out


def _hf_class_settings(tok: Tokenizer, tokenizer_class: str) -> dict:
    if tokenizer_class == "BertTokenizer":
        p = tok.pre_tokenizer  # type: ignore[attr-defined]
        return {
            "do_lower_case": p.lowercase,
            "strip_accents": p.strip_accents_setting,
            "tokenize_chinese_chars": p.handle_chinese_chars,
        }
    if tokenizer_class == "GPT2Tokenizer":
        return {"add_prefix_space": tok.add_prefix_space}  # type: ignore[attr-defined]
    return {}


def save_hf_tokenizer(
    tok: Tokenizer,
    folder: str | Path,
    *,
    tokenizer_class: str | None = None,
    model_max_length: int | None = None,
    processor_class: str | None = None,
) -> str:
    """Write ``tok`` so that ``transformers.AutoTokenizer.from_pretrained(folder)`` gives the same
    ids: vlkit's files (``vlkit_tokenizer.json``, the vocabulary, ``tokenizer.json``) and
    ``tokenizer_config.json`` + ``special_tokens_map.json``. Returns the HF class written."""
    folder = Path(folder)
    tok.save(folder)
    cls = hf_tokenizer_class(tok, tokenizer_class)
    special = _hf_special_tokens(tok, cls)
    length = tok.context_length or model_max_length
    config = {
        "tokenizer_class": cls,
        **({"model_max_length": length} if length else {}),
        **special,
        **_hf_class_settings(tok, cls),
        **({"processor_class": processor_class} if processor_class else {}),
    }
    for name, data in (
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", {k: v for k, v in special.items() if v is not None}),
    ):
        (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return cls
