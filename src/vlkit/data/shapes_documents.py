"""Text-only documents about the built-in shapes for the language model BLIP-2's demo keeps frozen.

BLIP-2 answers zero-shot by putting the image, as a soft prompt, in front of ``question: ...
answer:``: the frozen LLM must already read facts from its context. An LLM trained on captions and
question-answer sentences that stand alone never learns that (its answers follow the question
alone), so these documents put the facts first, still as text alone (no image is rendered):

- ``qa``: a canonical caption, then one or two questions about it and their answers
  ("a large red cross on the right question: what colour is the cross? answer: red");
- ``describe``: a canonical caption, then "question: describe the image. answer:" and the caption
  again (the captioning prompt of the BLIP-2 demo);
- ``caption``: a caption alone, in the shapes' random style ("a photo of a red cross").

Every document is a pure function of ``(seed, split, index)`` and uses only words of
:func:`vlkit.data.conversations.conversation_tokenizer`. ``python -m vlkit.data.shapes_documents
--out DIR`` writes ``DIR/train.txt`` and ``DIR/validation.txt``, one document a line, for the ``lm``
recipe's ``data.kind: text``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from ..files import write_text
from .synthetic import ShapesDataset, full_caption, random_caption, random_question

DOCUMENT_KINDS = ("qa", "describe", "caption")
DESCRIBE_PROMPT = "question: describe the image. answer:"


def shapes_document(dataset: ShapesDataset, index: int) -> str:
    """The document about sample ``index`` of ``dataset`` (its kind drawn from the index)."""
    a = dataset.attributes(index)
    rng = random.Random(f"vlkit-shapes-documents/{dataset.seed}/{dataset.split}/{index}")
    kind = rng.choice(DOCUMENT_KINDS)
    caption = full_caption(a)
    if kind == "caption":
        return random_caption(a, rng)
    if kind == "describe":
        return f"{caption} {DESCRIBE_PROMPT} {caption}"
    questions = [random_question(a, rng) for _ in range(rng.choice((1, 2)))]
    return " ".join([caption, *(f"question: {q.question} answer: {q.answer}" for q in questions)])


def write_documents(out: str | Path, *, train_size: int, val_size: int, seed: int = 0) -> list[Path]:
    """``out/train.txt`` and ``out/validation.txt`` (one document a line); the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, size in (("train", train_size), ("validation", val_size)):
        dataset = ShapesDataset(split, size=size, seed=seed)
        path = out / f"{split}.txt"
        write_text(path, "".join(shapes_document(dataset, i) + "\n" for i in range(size)))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for train.txt and validation.txt")
    p.add_argument("--train-size", type=int, default=100_000)
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for path in write_documents(args.out, train_size=args.train_size, val_size=args.val_size, seed=args.seed):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
