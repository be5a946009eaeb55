"""``vlkit tokenize`` and ``vlkit tokenizer train``.

vlkit tokenize --tokenizer clip "a photo of a cat"
vlkit tokenizer train --algorithm bpe --vocab-size 8000 corpus.txt --out my-tokenizer/
"""

from __future__ import annotations

import argparse
import json
import sys

ALGORITHMS = ("bpe", "wordpiece", "word", "char")


def add_commands(commands) -> None:
    p = commands.add_parser(
        "tokenize",
        help="print the tokens and ids of texts",
        description="Tokenize texts and print their tokens and ids.",
    )
    p.add_argument("texts", nargs="+", metavar="TEXT", help="text to tokenize ('-' reads lines from stdin)")
    p.add_argument("--tokenizer", default="clip", help="registered name (clip, bert-base-uncased), folder or file")
    p.add_argument("--special", action="store_true", help="add the special tokens the model puts around a text")
    p.add_argument("--json", action="store_true", help="print one JSON object per text")
    p.set_defaults(run=run_tokenize)

    t = commands.add_parser("tokenizer", help="train tokenizers", description="Tokenizer tools.")
    sub = t.add_subparsers(dest="tokenizer_command", required=True, metavar="SUBCOMMAND")
    tr = sub.add_parser(
        "train",
        help="train a tokenizer on text files",
        description="Train a tokenizer on UTF-8 text files and save it (vlkit folder + HF tokenizer.json).",
    )
    tr.add_argument("corpus", nargs="+", metavar="CORPUS", help="UTF-8 text files")
    tr.add_argument("--algorithm", required=True, choices=ALGORITHMS)
    tr.add_argument("--vocab-size", type=int, required=True, help="vocabulary size, special tokens included")
    tr.add_argument("--out", required=True, help="output folder")
    tr.add_argument("--min-frequency", type=int, default=None, help="ignore pairs/units seen fewer times")
    tr.add_argument(
        "--lowercase",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lowercase the text (default: on for wordpiece, off for bpe/word/char)",
    )
    tr.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    tr.set_defaults(run=run_train)


def _texts(args) -> list[str]:
    texts = []
    for t in args.texts:
        if t == "-":
            texts += [line.rstrip("\n") for line in sys.stdin]
        else:
            texts.append(t)
    return texts


def run_tokenize(args) -> int:
    from vlkit.tokenizers import get_tokenizer

    tok = get_tokenizer(args.tokenizer)
    for text in _texts(args):
        ids = tok.encode(text, add_special_tokens=args.special)
        tokens = [tok.id_to_token(i) for i in ids]
        if args.json:
            print(json.dumps({"text": text, "tokens": tokens, "ids": ids}, ensure_ascii=False))
        else:
            print(f"text:   {text}")
            print(f"tokens: {' '.join(repr(t) for t in tokens)}")
            print(f"ids:    {' '.join(map(str, ids))}")
    return 0


def run_train(args) -> int:
    import time

    from vlkit.tokenizers import ALGORITHM_CLASSES, read_corpus

    if args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be positive, got {args.vocab_size}")
    cls = ALGORITHM_CLASSES[args.algorithm]
    options = {"progress": args.progress}
    if args.min_frequency is not None:
        options["min_frequency"] = args.min_frequency
    if args.lowercase is not None:
        options["lowercase"] = args.lowercase
    start = time.perf_counter()
    tok = cls.train(read_corpus(args.corpus), args.vocab_size, **options)
    seconds = time.perf_counter() - start
    folder = tok.save(args.out)
    print(f"trained {args.algorithm} tokenizer: {tok.vocab_size} tokens in {seconds:.1f} s -> {folder}")
    return 0
