"""One interface per role: every contrastive model has encode_image / encode_text / scale(), every
fusion model itm_logits(pixel_values, input_ids, attention_mask=None) -> (B, 2); the recipes and
the evaluation use them without adapters."""

import pytest
import torch

import vlkit
from vlkit.train.recipes.common import contrastive_evaluate


@pytest.mark.parametrize("preset", ["clip-tiny", "albef-tiny", "blip-tiny"])
def test_contrastive_role(preset):
    torch.manual_seed(0)
    model = vlkit.create_model(preset).eval()
    size = model.config.vision.image_size
    pixels, ids = torch.randn(3, 3, size, size), torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    img, txt = model.encode_image(pixels, normalize=True), model.encode_text(ids, mask, normalize=True)
    assert img.shape == txt.shape and img.shape[0] == 3
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    scale = model.scale()
    assert scale.dim() == 0 and 1.0 < scale.item() <= 100.0 and scale.requires_grad


@pytest.mark.parametrize("preset", ["albef-tiny", "blip-tiny"])
def test_fusion_role(preset):
    torch.manual_seed(0)
    model = vlkit.create_model(preset).eval()
    size = model.config.vision.image_size
    pixels, ids = torch.randn(2, 3, size, size), torch.randint(5, 100, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    logits = model.itm_logits(pixels, ids, mask)
    assert logits.shape == (2, 2)
    assert model.itm_logits(pixels, ids).shape == (2, 2)  # the mask is optional
    # padding is invisible: the second pair scores the same without its padded tail
    assert torch.allclose(model.itm_logits(pixels[1:], ids[1:, :4])[0], logits[1], atol=1e-5)


def test_the_contrastive_evaluation_takes_any_contrastive_model():
    from vlkit.data.synthetic import ShapesDataset
    from vlkit.train.recipes.blip import CaptionCollator, load_tokenizer, text_ids

    torch.manual_seed(0)
    tok = load_tokenizer("shapes")
    model = vlkit.create_model("blip-tiny", text=text_ids(tok)).train()
    ds = ShapesDataset(size=6, image_size=32, transform=vlkit.image_transform(model), captions="full")
    result = contrastive_evaluate(model, ds, CaptionCollator(tok), tok, batch_size=3, zeroshot=True)
    assert {"loss", "i2t_R@1", "zeroshot_shape_top1"} <= set(result.metrics) and model.training


def test_tasks_export_the_vqa_tasks():
    from vlkit.tasks import BLIPVQATask, VQATask
    from vlkit.tasks.vqa import BLIPVQATask as B
    from vlkit.tasks.vqa import VQATask as V

    assert (BLIPVQATask, VQATask) == (B, V)
