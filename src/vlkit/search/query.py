"""Querying an index: by text, by an example image, by an indexed image ("more like this"), and
zero-shot labels for an image.

    searcher = Searcher("photos.index")                 # the index's own model
    searcher.search_text("a red circle", k=10)          # [Hit(path="sub/a.png", score=0.31), ...]
    searcher.search_image(load_image("query.jpg"), k=10)
    searcher.similar("sub/a.png", k=10)

A model given by name must be the index's (:func:`vlkit.search.identity.check_same_model`).
:meth:`Searcher.refresh` picks up a version written since (``vlkit index update``): queries keep
using the version in memory until the new one is read whole.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.transforms import image_transform
from ..eval.resolve import load_model_and_tokenizer, require_embedder
from ..eval.retrieval import encode_texts
from ..eval.zeroshot import zeroshot_classifier, zeroshot_logits
from ..runtime import resolve_device
from .ann import search_faiss
from .identity import check_same_model
from .store import IndexData, current_version, read_index

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@dataclass(frozen=True)
class Hit:
    """One result: the image's path as the index stores it (relative to the indexed folder) and
    its cosine similarity to the query."""

    path: str
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """An index in memory with the model that embeds its queries (see the module docstring)."""

    def __init__(
        self,
        index: str | os.PathLike,
        model: str | None = None,
        *,
        tokenizer: str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.folder = Path(index)
        self.data: IndexData = read_index(self.folder)
        source = model or self.data.info["model"]
        loaded, self.tokenizer = load_model_and_tokenizer(source, tokenizer)
        self.device = resolve_device(device)
        self.model = require_embedder(loaded, source).to(self.device).eval()
        check_same_model(self.data.info["identity"], self.model, index=str(self.folder), model_name=source)
        self.transform = image_transform(self.model)
        self._reading = threading.Lock()

    @property
    def root(self) -> Path:
        return self.data.root

    def refresh(self) -> bool:
        """Read the index's current version if it is newer than the one in memory; whether it was."""
        if current_version(self.folder) == self.data.version:
            return False
        with self._reading:
            if current_version(self.folder) == self.data.version:
                return False
            data = read_index(self.folder)
            if data.info["identity"] != self.data.info["identity"]:
                raise ValueError(f"index {self.folder} was rebuilt with another model; restart with that model")
            self.data = data  # one assignment: a query sees the old version or the new, whole
            return True

    # ------------------------------------------------------------------------------ vectors
    @torch.no_grad()
    def text_vector(self, text: str) -> np.ndarray:
        if not text.strip():
            raise ValueError("the text query is empty")
        feats = encode_texts(self.model, self.tokenizer, [text], device=self.device, normalize=True)  # (1, D)
        return feats.numpy()

    @torch.no_grad()
    def image_vector(self, image: Image.Image) -> np.ndarray:
        pixels = self.transform(image)[None].to(self.device)  # (1, 3, H, W)
        return self.model.encode_image(pixels, normalize=True).float().cpu().numpy()  # (1, D)

    # ------------------------------------------------------------------------------ queries
    def search_vector(self, vector: np.ndarray, k: int = 10, *, exclude: str | None = None) -> list[Hit]:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        data = self.data
        scores, ids = search_faiss(data.faiss_index, vector, k + (exclude is not None))  # (1, k)
        hits = [Hit(data.entries[i].path, round(float(s), 6)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        return [h for h in hits if h.path != exclude][:k]

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        return self.search_vector(self.text_vector(text), k)

    def search_image(self, image: Image.Image, k: int = 10) -> list[Hit]:
        return self.search_vector(self.image_vector(image), k)

    def similar(self, path: str, k: int = 10) -> list[Hit]:
        """The ``k`` images nearest the indexed image ``path`` (itself left out)."""
        data = self.data
        if path not in data.positions:
            raise KeyError(f"{path} is not in index {self.folder}")
        return self.search_vector(data.embeddings[data.positions[path]][None], k, exclude=path)

    def classify(
        self, image: Image.Image, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
    ) -> list[Hit]:
        """Zero-shot: every class with its cosine similarity to ``image``, best first."""
        classes = [c.strip() for c in classes if c.strip()]
        classifier = zeroshot_classifier(self.model, self.tokenizer, classes, templates, device=self.device)  # (C, D)
        scores = zeroshot_logits(torch.from_numpy(self.image_vector(image)), classifier)[0]  # (C,)
        order = scores.argsort(descending=True).tolist()
        return [Hit(classes[i], round(float(scores[i]), 6)) for i in order]
