"""Zero-shot classification: prompt ensembling and top-k accuracy, with known answers."""

import pytest
import torch
import torch.nn.functional as F

from vlkit.eval import class_prompts, topk_accuracy, zeroshot_accuracy, zeroshot_classifier


class TableModel:
    """encode_text looks each prompt's feature up in a table (ids carry the prompt number)."""

    def __init__(self, table):
        self.table = table

    def encode_text(self, ids, mask=None, normalize=False):
        f = self.table[ids[:, 0]]
        return F.normalize(f, dim=-1) if normalize else f


def tokenizer_for(prompts):
    def tok(texts, padding="longest"):
        ids = torch.tensor([[prompts.index(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return tok


def test_classifier_is_the_renormalised_mean_of_normalised_prompts():
    classes, templates = ["cat", "dog"], ["a {}.", "a photo of a {}.", "{}!"]
    prompts = class_prompts(classes, templates)
    assert prompts == ["a cat.", "a photo of a cat.", "cat!", "a dog.", "a photo of a dog.", "dog!"]
    table = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * torch.arange(1.0, 7.0)[:, None]
    w = zeroshot_classifier(TableModel(table), tokenizer_for(prompts), classes, templates, batch_size=4)
    expected = torch.stack(
        [F.normalize(F.normalize(table[3 * c : 3 * c + 3], dim=-1).mean(0), dim=0) for c in range(2)]
    )
    assert torch.allclose(w, expected, atol=1e-6)


def test_topk_accuracy_known_answer():
    logits = torch.tensor([[0.9, 0.5, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.5], [0.1, 0.2, 0.3]])
    acc = topk_accuracy(logits, [0, 2, 2, 0], ks=(1, 2, 5))
    assert acc == {"top1": 50.0, "top2": 75.0, "top5": 100.0}
    with pytest.raises(ValueError, match="labels must lie"):
        topk_accuracy(logits, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="4 predictions but 2 labels"):
        topk_accuracy(logits, [0, 1])


def test_zeroshot_accuracy_end_to_end():
    classes, templates = ["a", "b", "c"], ["{}"]
    table = torch.eye(3)
    images = torch.tensor([[1.0, 0.1, 0.0], [0.0, 0.2, 1.0], [0.0, 1.0, 0.9]])
    acc = zeroshot_accuracy(TableModel(table), tokenizer_for(classes), images, [0, 2, 2], classes, templates)
    assert acc["top1"] == pytest.approx(200 / 3) and acc["top5"] == 100.0


def test_bad_templates():
    with pytest.raises(ValueError, match="'a photo' must hold exactly one '\\{\\}'.*found 0"):
        class_prompts(["cat"], ["a photo"])
    with pytest.raises(ValueError, match="'a \\{\\} of a \\{\\}' must hold exactly one.*found 2"):
        class_prompts(["cat"], ["a {} of a {}"])
    with pytest.raises(ValueError, match="'a \\{0\\} \\{name\\}' has the fields"):
        class_prompts(["cat"], ["a {0} {name}"])
    with pytest.raises(ValueError, match="'a \\{ photo' is not a format string"):
        class_prompts(["cat"], ["a { photo"])
    assert class_prompts(["cat"], ["{{literal}} {}"]) == ["{literal} cat"]
    with pytest.raises(ValueError, match="at least one class"):
        class_prompts([], ["{}"])
