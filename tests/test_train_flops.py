"""Model FLOPs of a training step counted from the config: a hand count for a tiny CLIP, torch's
FLOP counter on the real step, the peak table, and flops_per_step / mfu in the training log."""

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import vlkit
from helpers import TINY_CLIP
from vlkit.losses.contrastive import clip_loss
from vlkit.losses.sigmoid import sigmoid_loss
from vlkit.train import load_config, train
from vlkit.train.flops import clip_train_flops, peak_flops, peak_flops_of_name, train_step_flops

TINY = [*TINY_CLIP, "train.batch_size=8", "train.log_every=1", "train.progress=false", "train.plots=false",
        "train.threads=1", "data.train_size=48", "data.val_size=0"]  # fmt: skip


def test_clip_tiny_train_flops_match_a_hand_count():
    config = vlkit.create_model("clip-tiny").config  # images 32/8: 16 patches, width 64, 2 blocks, MLP 256; D 64
    block_params = 64 * 3 * 64 + 64 * 64 + 2 * 64 * 256  # qkv, out projection, MLP = 49,152
    image = (
        2 * 3 * 8 * 8 * 64 * 16  # patch embedding on 16 patches: 393,216
        + 2 * (2 * block_params * 17 + 4 * 17 * 17 * 64)  # 2 blocks on 17 tokens: 3,342,336 + 147,968
        + 2 * 64 * 64  # projection of [CLS]: 8,192
    )
    text = 2 * (2 * block_params * 9 + 4 * 9 * 9 * 64) + 2 * 64 * 64  # 9 tokens: 1,769,472 + 41,472 + 8,192
    assert image == 3_891_712 and text == 1_819_136
    # training: blocks and projections three forwards, the patch embedding two (no pixel gradients)
    per_pair = 3 * (image - 393_216) + 2 * 393_216 + 3 * text
    assert clip_train_flops(config, batch_size=8, text_length=9) == 8 * per_pair == 133_914_624
    # frozen towers run forward only; the projections still get their weight gradients
    frozen = clip_train_flops(config, batch_size=8, text_length=9, image_trained=False, text_trained=False)
    assert frozen == 8 * ((image - 8_192) + 2 * 8_192 + (text - 8_192) + 2 * 8_192)


@pytest.mark.parametrize("preset, logit_products", [("clip-tiny", 2), ("siglip-tiny", 1)])
def test_train_flops_equal_torch_flop_counter_on_the_real_step(preset, logit_products):
    torch.manual_seed(0)
    model = vlkit.create_model(preset)  # 32-pixel images, width 64, 2 blocks per tower, D 64
    B, T = 8, 9
    pixels, ids = torch.randn(B, 3, 32, 32), torch.randint(1, 40, (B, T))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):  # attention as counted matmuls
        image, text = model(pixels, ids)
        if preset == "clip-tiny":
            loss = clip_loss(image, text, model.scale())["contrastive_loss"]
        else:
            loss = sigmoid_loss(image, text, model.scale(), model.bias())["sigmoid_loss"]
        loss.backward()
    # the loss's (B, B) logit products, forward and backward (x 3), are not model FLOPs
    logits = logit_products * 3 * (2 * B * B * 64)
    assert counter.get_total_flops() == train_step_flops(model, {"input_ids": ids}, B) + logits


def test_peak_flops_table_and_override():
    assert peak_flops_of_name("NVIDIA H100 80GB HBM3") == 989.4e12
    assert peak_flops_of_name("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_of_name("NVIDIA H200") == 989.4e12
    assert peak_flops_of_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_of_name("NVIDIA GeForce RTX 3090") is None
    assert peak_flops("cpu") is None
    assert peak_flops("cpu", 1e12) == 1e12


def test_training_log_and_progress_have_flops_per_step_and_mfu_with_a_peak(tmp_path, capsys):
    cfg = load_config(
        None, [*TINY, "train.max_steps=2", "train.peak_flops=1e12", f"train.output_dir={tmp_path}",
               "eval.zeroshot=false", "eval.retrieval=false", "train.progress=true"],
    )  # fmt: skip
    train(cfg)
    progress = capsys.readouterr().err  # not a terminal: plain progress lines
    assert "step 2/2:" in progress and "mfu " in progress and "%" in progress
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in rows if r.get("split") == "train"]
    assert len(records) == 2
    model = vlkit.from_pretrained(tmp_path / "model")
    for r in records:
        assert r["flops_per_step"] > 0 and 0 < r["mfu"] < 1
        # the flops of a batch of 8 with captions of some length in the range of the shapes' captions
        lengths = [
            L
            for L in range(2, 78)
            if train_step_flops(model, {"input_ids": torch.zeros(8, L)}, 8) == r["flops_per_step"]
        ]
        assert len(lengths) == 1


def test_no_mfu_without_a_known_peak(tmp_path):
    cfg = load_config(None, [*TINY, "train.max_steps=1", f"train.output_dir={tmp_path}", "eval.zeroshot=false",
                             "eval.retrieval=false"])  # fmt: skip
    train(cfg)
    record = next(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
                  if json.loads(line).get("split") == "train")  # fmt: skip
    assert record["flops_per_step"] > 0 and "mfu" not in record


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_peak_flops_must_be_positive(tmp_path, value):
    with pytest.raises(ValueError, match="train.peak_flops"):
        train(load_config(None, [*TINY, f"train.peak_flops={value}", f"train.output_dir={tmp_path}"]))
