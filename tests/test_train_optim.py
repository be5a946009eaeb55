"""AdamW groups and learning-rate schedule, checked against open_clip's training code."""

import open_clip
import pytest
import torch

import vlkit
from vlkit.train.optim import (
    adamw_kernels,
    build_optimizer,
    build_scheduler,
    keep_kernels,
    kernel_choice,
    lr_factor,
    no_decay_names,
    param_groups,
)


def open_clip_excluded(name: str, p: torch.Tensor) -> bool:
    """open_clip's training/main.py rule for parameters without weight decay."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def test_no_decay_set_equals_open_clips_on_the_same_model():
    from vlkit.convert import open_clip as oc

    cfg = dict(
        embed_dim=24,
        vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=2, head_width=12, mlp_ratio=2.0),
        text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=4, layers=2),
    )
    ref = open_clip.model.CLIP(**cfg)
    # mark every open_clip parameter 1 (no decay) or 0 (decay) and carry the marks through the converter
    marks = {n: torch.full_like(p, float(open_clip_excluded(n, p))) for n, p in ref.named_parameters()}
    marks.update({n: b for n, b in ref.state_dict().items() if n not in marks})
    converted = oc.state_dict_from_open_clip(marks)
    model = vlkit.create_model("clip-tiny")
    model = type(model)(
        vlkit.models.registry.config_from_dict(
            type(model.config), oc.config_from_open_clip({"model_cfg": cfg}, ref.state_dict())
        )
    )
    ours = no_decay_names(model)
    expected = {n for n, _ in model.named_parameters() if bool(converted[n].flatten()[0])}
    assert all(converted[n].unique().numel() == 1 for n, _ in model.named_parameters())
    assert ours == expected
    # and the groups cover every trainable parameter once
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)


def test_named_examples_on_clip_tiny():
    model = vlkit.create_model("clip-tiny")
    skip = no_decay_names(model)
    for name in ("logit_scale", "visual.cls_token", "text.norm.weight", "text.norm.bias", "visual.norm_pre.weight"):
        assert name in skip
    for name in (
        "text.token_embed.weight",
        "text.pos_embed.weight",
        "visual.pos_embed",
        "image_proj.weight",
        "visual.patch_embed.proj.weight",
    ):
        assert name not in skip
    model.visual.requires_grad_(False)
    opt = build_optimizer(model, 1e-3, 0.2)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_warmup_cosine_schedule():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=0.5)
    sched = build_scheduler(opt, lr=0.5, max_steps=40, warmup_steps=10)
    seen = []
    for _ in range(40):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    from open_clip_train.scheduler import cosine_lr

    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.5)
    adjust = cosine_lr(ref_opt, 0.5, 10, 40)
    assert seen == pytest.approx([adjust(s) for s in range(40)], abs=1e-12)
    assert seen[0] == pytest.approx(0.05) and seen[9] == pytest.approx(0.5) and seen[25] == pytest.approx(0.25)
    assert lr_factor(39, max_steps=40, warmup_steps=10, schedule="constant") == 1.0
    assert lr_factor(40, max_steps=40, warmup_steps=10, min_ratio=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cosine"):
        build_scheduler(opt, lr=0.5, max_steps=4, warmup_steps=1, schedule="linear")


def test_adamw_kernels_fused_on_one_device_type_foreach_elsewhere():
    assert kernel_choice({"cuda"}) == {"fused": True}
    assert kernel_choice({"cpu"}) == {"fused": True}
    assert kernel_choice({"cuda", "cpu"}) == {"foreach": True}  # mixed devices: one kernel cannot serve both
    assert kernel_choice({"cuda"}, plain_tensors=False) == {"foreach": True}  # sharded (DTensor) parameters
    opt = build_optimizer(vlkit.create_model("clip-tiny"), 1e-3, 0.1)  # on the CPU
    assert all(g["fused"] and not g["foreach"] for g in opt.param_groups)


def test_resume_keeps_this_devices_adamw_kernels():
    model = vlkit.create_model("clip-tiny")
    opt = build_optimizer(model, 1e-3, 0.1)
    saved = opt.state_dict()
    for g in saved["param_groups"]:  # as a sharded (FSDP) run writes it
        g["fused"], g["foreach"] = None, True
    kernels = adamw_kernels(opt)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["foreach"]  # load_state_dict takes the checkpoint's flags
    keep_kernels(opt, kernels)
    assert all(g["fused"] and not g["foreach"] for g in opt.param_groups)
