"""Captions and answers about an image with a BLIP model, for the web page's "caption" and "ask".

assistant = Assistant.load("runs/blip-shapes")      # a captioning BLIP, or a blip-vqa run
assistant.caption(image)                             # "a small red circle at the top left"
assistant.ask(image, "what colour is the shape?")    # needs a VQA model (blip-vqa runs have one)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..data.image_files import ImageFiles
from ..data.transforms import image_transform
from ..eval.captioning import generate_captions
from ..eval.harness import ImageBatches
from ..eval.resolve import load_model_and_tokenizer, require_captioner, vqa_model
from ..eval.vqa import answer_questions


class Assistant:
    """A captioning BLIP and, where the model has one, its VQA partner."""

    def __init__(self, captioner, tokenizer, vqa=None, device: torch.device | str = "cpu") -> None:
        self.captioner, self.tokenizer, self.vqa = captioner, tokenizer, vqa
        self.device = torch.device(device)
        self.transform = image_transform(captioner)

    @classmethod
    def load(cls, source: str, device: torch.device | str = "cpu") -> Assistant:
        model, tokenizer = load_model_and_tokenizer(source)
        captioner = require_captioner(model, source).to(device).eval()
        try:
            vqa = vqa_model(model, source).to(device).eval()
        except ValueError:  # a captioner alone: no questions
            vqa = None
        return cls(captioner, tokenizer, vqa, device)

    @property
    def can_answer(self) -> bool:
        return self.vqa is not None

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)[None]  # (1, 3, H, W)

    def caption(self, image: Image.Image) -> str:
        return generate_captions(self.captioner, self.tokenizer, [self._pixels(image)], device=self.device)[0]

    def caption_files(self, files: Sequence[Path], batch_size: int = 32) -> list[str | None]:
        """A caption per file (None for a file that cannot be decoded)."""
        batches = ImageBatches(ImageFiles(files, self.transform), batch_size)
        captions = generate_captions(self.captioner, self.tokenizer, batches, device=self.device)
        out: list[str | None] = [None] * len(files)
        for i, text in zip(batches.kept, captions):
            out[i] = text
        return out

    def ask(self, image: Image.Image, question: str) -> str:
        if self.vqa is None:
            raise ValueError("this model answers no questions (it has no VQA model); serve a blip-vqa run's model")
        if not question.strip():
            raise ValueError("the question is empty")
        return answer_questions(self.vqa, self.tokenizer, self._pixels(image), [question], device=self.device)[0]
