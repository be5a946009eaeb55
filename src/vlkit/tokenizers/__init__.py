"""Tokenizers: word, character, byte-level BPE (GPT-2), CLIP BPE and WordPiece (BERT).

    from vlkit.tokenizers import get_tokenizer
    tok = get_tokenizer("clip")                  # or "bert-base-uncased", a folder, a file
    batch = tok(["a photo of a cat"])           # input_ids, attention_mask: LongTensor (B, T)
    tok.decode(tok.encode("a photo of a cat"))

Each algorithm trains from a corpus (``BPETokenizer.train(texts, vocab_size)``, ...), saves to a
folder (``tok.save(folder)``: vlkit's files plus an HF ``tokenizer.json``) and loads back with
``get_tokenizer(folder)``.
"""

from .base import Tokenizer
from .bpe import GPT2_PATTERN, BPETokenizer
from .bpe_core import bytes_to_unicode
from .chat import ChatText, apply_chat_template, encode_chat
from .clip import CLIPTokenizer
from .clip_clean import clip_clean
from .hf import tokenizer_from_hf_json
from .loading import get_tokenizer, list_tokenizers, register_tokenizer
from .simple import CharTokenizer, WordTokenizer
from .sp_bpe import SentencePieceBPETokenizer
from .training import read_corpus
from .wordpiece import WordPieceTokenizer

ALGORITHM_CLASSES = {
    "bpe": BPETokenizer,
    "wordpiece": WordPieceTokenizer,
    "word": WordTokenizer,
    "char": CharTokenizer,
}

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "CLIPTokenizer",
    "WordPieceTokenizer",
    "WordTokenizer",
    "CharTokenizer",
    "get_tokenizer",
    "list_tokenizers",
    "register_tokenizer",
    "tokenizer_from_hf_json",
    "read_corpus",
    "bytes_to_unicode",
    "clip_clean",
    "GPT2_PATTERN",
    "ALGORITHM_CLASSES",
    "SentencePieceBPETokenizer",
    "ChatText",
    "apply_chat_template",
    "encode_chat",
]
