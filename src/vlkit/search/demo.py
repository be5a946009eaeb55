"""The search demo (``make search-demo``): the built-in shapes' held-out images as a photo folder,
indexed with the CLIP demo's model, and the precision of example queries.

    python -m vlkit.search.demo --model runs/clip-shapes --out runs/search-demo

writes ``OUT/images/`` (PNG files and ``labels.csv`` with each image's shape, colour, size and
position), builds ``OUT/index`` and prints precision@10 of the example queries: the share of the
top 10 whose labels match every attribute the query names. The images are the ``validation``
split, which training never sees.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..data.synthetic import ShapesDataset
from ..files import write_text
from .build import build_index
from .query import Searcher

# (query, the attributes a relevant image has)
EXAMPLE_QUERIES: tuple[tuple[str, dict[str, str]], ...] = (
    ("a red circle", {"colour": "red", "shape": "circle"}),
    ("a large blue star", {"size": "large", "colour": "blue", "shape": "star"}),
    ("a green triangle at the top", {"colour": "green", "shape": "triangle", "position": "top"}),
)
ATTRIBUTES = ("shape", "colour", "size", "position")


def write_shapes_folder(folder: str | Path, count: int = 1000, *, image_size: int = 96, seed: int = 0) -> Path:
    """``count`` held-out shape images as ``folder/NNNN.png`` with ``folder/labels.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = ShapesDataset("validation", size=count, seed=seed, image_size=image_size)
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", *ATTRIBUTES, "caption"])
    for i in range(count):
        a = data.attributes(i)
        name = f"{i:04d}.png"
        if not (folder / name).is_file():
            data.image(i).save(folder / name)
        writer.writerow([name, a.shape, a.colour, a.size, a.position, data.caption(i)])
    write_text(folder / "labels.csv", rows.getvalue())
    return folder


def read_labels(folder: str | Path) -> dict[str, dict[str, str]]:
    with open(Path(folder) / "labels.csv", encoding="utf-8", newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def precision_at_k(
    searcher: Searcher, labels: dict[str, dict[str, str]], query: str, wanted: dict[str, str], k: int = 10
) -> float:
    """The share of the top ``k`` results of ``query`` whose labels hold every ``wanted`` attribute."""
    hits = searcher.search_text(query, k)
    return sum(all(labels[h.path][key] == value for key, value in wanted.items()) for h in hits) / len(hits)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlkit.search.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/clip-shapes", help="the CLIP demo's run (make clip-demo)")
    parser.add_argument("--out", default="runs/search-demo")
    parser.add_argument("--count", type=int, default=1000, help="held-out images to index")
    args = parser.parse_args(argv)
    out = Path(args.out)
    images = write_shapes_folder(out / "images", args.count)
    index = out / "index"
    report = build_index(index, args.model, images, overwrite=True, num_workers=None, device="cpu")
    print(report.summary())
    searcher = Searcher(index)
    labels = read_labels(images)
    for query, wanted in EXAMPLE_QUERIES:
        print(f"precision@10 of {query!r}: {precision_at_k(searcher, labels, query, wanted):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
