"""The SigLIP task and recipe: model + sigmoid loss learn (two seeds), the tiled task equals the
whole one, and `task: siglip` trains and evaluates on the built-in shapes through the CLI."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vlkit
from helpers import as_flags, max_diff
from vlkit.cli import main
from vlkit.losses.sigmoid import sigmoid_loss
from vlkit.tasks import FeatureTask, SigLIPTask
from vlkit.train import accumulate
from vlkit.train.recipes import RECIPES, SigLIPRecipe

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "siglip-shapes.yaml"
TINY_SIGLIP = [
    "model.vision.image_size=16", "model.vision.patch_size=8", "model.vision.width=32", "model.vision.mlp_dim=64",
    "model.vision.num_heads=2", "model.text.width=32", "model.text.mlp_dim=64", "model.text.num_heads=2",
    "model.text.context_length=16",
]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_model_and_sigmoid_loss_learn_to_match_pairs(seed):
    """8 random images with 8 captions: 20 AdamW steps (gradients clipped, as the training loop
    does) take the loss from ~10 (bias -10: every positive far below 0) under 15% of it."""
    torch.manual_seed(seed)
    model = vlkit.create_model("siglip-tiny", text={"vocab_size": 64, "context_length": 8})
    pixels, ids = torch.randn(8, 3, 32, 32), torch.randint(1, 64, (8, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = sigmoid_loss(*model(pixels, ids), model.scale(), model.bias())["sigmoid_loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 5 and losses[-1] < 0.15 * losses[0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.similarity(pixels, ids).argmax(dim=1), torch.arange(8))


def test_tiled_task_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = vlkit.create_model("siglip-tiny", text={"vocab_size": 64, "context_length": 8})
    batch = {
        "pixel_values": torch.randn(6, 3, 32, 32),
        "input_ids": torch.randint(1, 64, (6, 8)),
        "attention_mask": torch.ones(6, 8, dtype=torch.long),
    }
    grads = []
    for task in (SigLIPTask(), SigLIPTask(chunk_size=4)):
        model.zero_grad()
        loss = task.losses(model, batch)["sigmoid_loss"]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (whole, g_whole), (tiled, g_tiled) = grads
    assert max_diff(whole, tiled) <= 1e-5
    for name, g in g_whole.items():
        assert torch.allclose(g_tiled[name], g, rtol=1e-4, atol=1e-6), name
    assert set(SigLIPTask().log_values(model)) == {"logit_scale", "logit_bias"}


def test_siglip_is_a_registered_recipe():
    assert RECIPES["siglip"] is SigLIPRecipe
    recipe = RECIPES["siglip"]()
    assert recipe.validation_loss == "sigmoid_loss" and recipe.model_spec == {"preset": "siglip-tiny"}


def test_train_siglip_on_shapes_through_the_cli(tmp_path, capsys):
    """`task: siglip` on the shapes: the training loss falls, the validation has the sigmoid loss,
    Recall@K and zero-shot accuracy, and the saved model loads as SigLIP with its learned bias."""
    out = tmp_path / "run"
    argv = ["train", "--config", str(CONFIG), *as_flags(TINY_SIGLIP), "--train.output_dir", str(out),
            "--train.max_steps", "24", "--train.batch_size", "16", "--train.log_every", "4",
            "--train.eval_every", "24", "--train.checkpoint_every", "24", "--data.val_size", "32",
            "--data.num_workers", "0", "--optim.warmup_steps", "2", "--eval.batch_size", "32",
            "--train.progress", "false", "--train.plots", "false"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "zero-shot top-1 accuracy on 32 held-out images" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("split") == "train"]
    assert train[-1]["sigmoid_loss"] < 0.8 * train[0]["sigmoid_loss"]
    assert {"logit_scale", "logit_bias"} <= set(train[-1])
    (val,) = [r for r in rows if r.get("split") == "validation"]
    assert {"loss", "i2t_R@1", "t2i_R@1", "zeroshot_shape_top1", "zeroshot_colour_top1"} <= set(val)
    model = vlkit.from_pretrained(out / "model")
    assert type(model).__name__ == "Siglip" and model.bias().item() == pytest.approx(train[-1]["logit_bias"], abs=1e-3)
    # and out as an HF folder transformers' SiglipModel loads, with the recipe's (CLIP) tokenizer
    assert main(["convert", str(out / "model"), "--to", "hf", str(tmp_path / "hf")]) == 0
    transformers = pytest.importorskip("transformers")
    ref = transformers.SiglipModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids = vlkit.get_tokenizer("clip")(["a red circle"], padding="max_length", context_length=16)["input_ids"]
    with torch.no_grad():
        assert max_diff(model.encode_text(ids), ref.get_text_features(input_ids=ids).pooler_output) <= 1e-5
    assert ref.logit_bias.item() == pytest.approx(model.bias().item())


def test_accumulated_siglip_gradient_equals_the_whole_batch():
    """SigLIP is a feature task: 3 micro-batches (GradCache) give the whole batch's gradient,
    the learned scale's and bias's included."""
    torch.manual_seed(0)
    model = vlkit.create_model("siglip-tiny", text={"vocab_size": 64, "context_length": 8})
    batch = {
        "pixel_values": torch.randn(7, 3, 32, 32),
        "input_ids": torch.randint(1, 64, (7, 8)),
        "attention_mask": torch.ones(7, 8, dtype=torch.long),
        "captions": [str(i) for i in range(7)],
    }
    task = SigLIPTask()
    assert isinstance(task, FeatureTask)
    recipe = SimpleNamespace(name="siglip", task=task, losses=task.losses)
    grads = []
    for k in (1, 3):
        model.zero_grad(set_to_none=True)
        accumulate.backward(model, recipe, batch, 7, accum_steps=k, device=torch.device("cpu"), precision="fp32")
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) and {"logit_scale", "logit_bias"} <= set(grads[0])
    for name, want in grads[0].items():
        assert (grads[1][name] - want).abs().max() <= 1e-5 * want.abs().max() + 1e-9, name
