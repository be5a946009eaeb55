"""The config's ``loss:`` section: ``loss.chunk_size`` reaches the tasks' contrastive losses, a run
with it trains exactly as one without, and bad values are one-line errors."""

import json

import pytest
import torch

import vlkit
from helpers import SHAPES_WORDS, SPECIAL_TOKENS, TINY_CLIP, as_flags, torchrun_train
from vlkit.cli import main
from vlkit.data.synthetic import ShapesDataset
from vlkit.train.config import Config, LossConfig, load_config
from vlkit.train.recipes import BLIPRecipe, get_recipe

TINY = [
    *as_flags(TINY_CLIP),
    *["--train.batch_size", "8", "--train.max_steps", "3", "--train.log_every", "1", "--train.progress", "false"],
    *["--train.plots", "false", "--train.threads", "1", "--data.train_size", "48", "--data.val_size", "8"],
    *["--optim.lr", "3e-3", "--optim.warmup_steps", "1", "--eval.zeroshot", "false"],
]


def _train_losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["contrastive_loss"] for r in rows if r.get("split") == "train"]


def test_a_run_with_loss_chunk_size_trains_as_one_without(tmp_path):
    assert main(["train", *TINY, "--train.output_dir", str(tmp_path / "naive")]) == 0
    assert main(["train", *TINY, "--loss.chunk_size", "3", "--train.output_dir", str(tmp_path / "tiled")]) == 0
    naive, tiled = _train_losses(tmp_path / "naive"), _train_losses(tmp_path / "tiled")
    assert len(naive) == 3 and tiled == pytest.approx(naive, rel=1e-5)
    saved = (tmp_path / "tiled" / "config.yaml").read_text()
    assert "loss:\n  chunk_size: 3" in saved


def test_loss_section_reaches_the_tasks():
    cfg = load_config(None, ["loss.chunk_size=1024"])
    assert cfg.loss == LossConfig(chunk_size=1024) and Config.from_dict(cfg.to_dict()) == cfg
    assert get_recipe(cfg.task, cfg.model, cfg.loss).task.chunk_size == 1024
    assert get_recipe("clip").task.chunk_size is None
    assert get_recipe("blip", loss=LossConfig(chunk_size=64)).task.chunk_size == 64
    assert load_config(None, ["loss.chunk_size=null"]).loss.chunk_size is None


@pytest.mark.parametrize(
    "override, match",
    [
        ("loss.chunk_size=0", "loss: chunk_size must be a positive integer or null"),
        ("loss.chunk_size=-8", "chunk_size must be a positive integer"),
        ("loss.chunk_size=2.5", "loss.chunk_size: expected int"),
        ("loss.chunk=8", "unknown fields \\['chunk'\\]"),
    ],
)
def test_bad_loss_section(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_blip_itc_in_tiles_equals_blip_itc(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL_TOKENS + SHAPES_WORDS) + "\n")
    n = len(SPECIAL_TOKENS) + len(SHAPES_WORDS)
    text = {"vocab_size": n + 2, "bos_token_id": n, "enc_token_id": n + 1, "sep_token_id": 3}
    recipes = {
        chunk: BLIPRecipe(
            {"preset": "blip-tiny", "text": text}, tokenizer=str(vocab), loss=LossConfig(chunk_size=chunk)
        )
        for chunk in (None, 3)
    }
    assert recipes[3].task.chunk_size == 3
    torch.manual_seed(0)
    net = recipes[None].build_model()
    ds = ShapesDataset(size=8, image_size=32, transform=vlkit.image_transform(net), captions="full")
    batch = recipes[None].collate()([ds[i] for i in range(8)])
    itc, grads = {}, {}
    for chunk, recipe in recipes.items():
        torch.manual_seed(1)  # the same ITM negatives
        itc[chunk] = recipe.losses(net, batch)["itc_loss"]
        grads[chunk] = torch.autograd.grad(
            itc[chunk], [net.temp, *net.vision_proj.parameters(), *net.vision.parameters()]
        )
    assert itc[3].item() == pytest.approx(itc[None].item(), rel=1e-6)
    for a, b in zip(grads[3], grads[None]):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()  # float32 round-off


@pytest.mark.slow
def test_torchrun_with_loss_chunk_size_matches_one_naive_process(tmp_path):
    """2 processes of 4 pairs with the loss in tiles of 3 (over the gathered 8) follow the losses of
    one process of 8 pairs with the naive loss."""
    ddp = [*TINY, "--train.batch_size", "4", "--loss.chunk_size", "3", "--train.device", "cpu"]
    proc = torchrun_train([*ddp, "--train.output_dir", str(tmp_path / "ddp")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert main(["train", *TINY, "--train.output_dir", str(tmp_path / "one")]) == 0
    assert _train_losses(tmp_path / "ddp") == pytest.approx(_train_losses(tmp_path / "one"), rel=1e-4, abs=1e-5)
