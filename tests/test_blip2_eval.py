"""BLIP-2's recipes beyond the losses: a pretrained model with Q-Former overrides, a CLIP image
tower as stage 1's frozen encoder, and the evaluation (ITC Recall@K, captions, zero-shot VQA per
question type, the frozen parts' digest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import vlkit
from vlkit.data.synthetic import ShapesDataset, shapes_tokenizer
from vlkit.models.base import CheckpointError
from vlkit.train.config import TaskConfig
from vlkit.train.recipes import get_recipe

QUIET = {"dropout": 0.0, "attn_dropout": 0.0}


def recipe_for(name: str, model_spec: dict | None = None, **options):
    task = TaskConfig.from_value({"name": name, "tokenizer": "shapes", **options})
    return get_recipe(task, model_spec or {"preset": "blip2-tiny", "qformer": QUIET})


def stage1_folder(tmp_path):
    tok = shapes_tokenizer()
    model = vlkit.create_model("blip2-tiny", llm_type=None, llm=None, itg_head=True,
                               qformer={"vocab_size": tok.vocab_size + 1})  # fmt: skip
    model.save_pretrained(tmp_path / "s1")
    return model, tmp_path / "s1"


def test_pretrained_with_qformer_overrides_keeps_the_checkpoints_qformer(tmp_path):
    saved, folder = stage1_folder(tmp_path)
    built = recipe_for("blip2-stage1", {"pretrained": str(folder), "qformer": {"dropout": 0.3}}).build_model()
    q = built.blip2.config.qformer
    assert q.dropout == 0.3 and q.hidden_size == saved.config.qformer.hidden_size == 32
    assert q.num_query_tokens == 8 and q.vocab_size == saved.config.qformer.vocab_size
    assert torch.equal(built.blip2.qformer.query_tokens, saved.qformer.query_tokens)
    with pytest.raises(CheckpointError) as err:  # a shape-changing override: refused in one line
        recipe_for("blip2-stage1", {"pretrained": str(folder), "qformer": {"num_query_tokens": 4}}).build_model()
    message = str(err.value)
    assert "change the checkpoint's weights" in message and "qformer.query_tokens" in message and "\n" not in message


def test_a_clip_image_tower_becomes_stage_1s_frozen_encoder(tmp_path):
    clip = vlkit.create_model("clip-tiny")
    clip.save_pretrained(tmp_path / "clip")
    recipe = recipe_for("blip2-stage1", vision_model=str(tmp_path / "clip"))
    model = recipe.build_model().train()
    blip2 = model.blip2
    assert blip2.config.vision == clip.config.vision  # the tower type follows the CLIP's (pre-norm, QuickGELU)
    assert blip2.vision.norm_pre is not None and blip2.qformer.transformer.blocks[0].cross_attn.kv.in_features == 64
    mine, theirs = blip2.vision.state_dict(), clip.visual.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not blip2.vision.training and not any(p.requires_grad for p in blip2.vision.parameters())
    assert recipe.transform(model).mean.flatten().tolist() == pytest.approx(clip.config.vision.image_mean)  # CLIP's
    with pytest.raises(ValueError, match="model.vision.width=48 differs from the image tower"):
        recipe_for("blip2-stage1", {"preset": "blip2-tiny", "vision": {"width": 48}},
                   vision_model=str(tmp_path / "clip")).build_model()  # fmt: skip
    vlkit.create_model("gpt-tiny").save_pretrained(tmp_path / "gpt")
    with pytest.raises(TypeError, match="is a GPT; expected a model with a ViT image tower"):
        recipe_for("blip2-stage1", vision_model=str(tmp_path / "gpt")).build_model()
    with pytest.raises(ValueError, match="model.pretrained already has one"):
        recipe_for(
            "blip2-stage1", {"pretrained": str(tmp_path / "clip")}, vision_model=str(tmp_path / "clip")
        ).build_model()
    with pytest.raises(FileNotFoundError, match="task.vision_model: no model folder"):
        recipe_for("blip2-stage1", vision_model=str(tmp_path / "none")).build_model()


def test_stage1_evaluation_reports_itc_recall_and_the_frozen_digest():
    recipe = recipe_for("blip2-stage1")
    model = recipe.build_model()
    ds = ShapesDataset("validation", size=12, image_size=32, transform=recipe.transform(model), captions="full")
    metrics = recipe.evaluate(model, ds, batch_size=6).metrics
    assert {"itc_loss", "itm_loss", "itg_loss", "i2t_R@1", "t2i_R@1"} <= set(metrics)
    assert metrics["frozen_unchanged"] == 1.0 and metrics["frozen_parameters"] > 0
    lines = recipe.summary(metrics, len(ds))
    assert any(line.startswith("ITC retrieval Recall@1 on 12 held-out images") for line in lines), lines
    assert lines[-1].startswith("frozen image encoder and LLM") and lines[-1].endswith(": unchanged")
    start = lines[-1].split("sha256 ")[1][:16]
    assert start == model.blip2.frozen_digest()[:16]
    with torch.no_grad():
        model.blip2.vision.cls_token.add_(1.0)  # a frozen weight changed: the line says so
    metrics = recipe.evaluate(model, ds, batch_size=6).metrics
    assert metrics["frozen_unchanged"] == 0.0 and recipe.summary(metrics, len(ds))[-1].endswith(": CHANGED")


def test_stage2_evaluation_reports_captions_and_zero_shot_vqa_per_question_type():
    recipe = recipe_for("blip2-stage2", caption_eval_images=6, vqa_eval_questions=10, max_new_tokens=4)
    model = recipe.build_model()
    ds = ShapesDataset("validation", size=10, image_size=32, transform=recipe.transform(model), captions="full")
    metrics = recipe.evaluate(model, ds, batch_size=4).metrics
    types = {ds[i]["question_type"] for i in range(10)}
    assert metrics["caption_images"] == 6 and 0.0 <= metrics["caption_exact_match"] <= 100.0
    assert metrics["vqa_questions"] == 10 and {f"vqa_accuracy_{t}" for t in types} <= set(metrics)
    assert metrics["frozen_unchanged"] == 1.0
    lines = recipe.summary(metrics, len(ds))
    assert any(line.startswith("captions of 6 held-out images") and "CIDEr-D" in line for line in lines), lines
    assert any(line.startswith("zero-shot VQA accuracy on 10 held-out questions") for line in lines), lines
    assert lines[-1].endswith(": unchanged")


def test_demo_pipeline_connects_clip_tower_stage1_stage2_and_text_lm(tmp_path, capsys):
    """make blip2-demo in miniature: a CLIP folder's tower into stage 1, a text-only LM folder as
    stage 2's LLM (the conversations tokenizer); both frozen through the real loop."""
    from vlkit.cli import main
    from vlkit.data.conversations import conversation_tokenizer

    torch.manual_seed(0)
    clip = vlkit.create_model("clip-tiny")
    clip.save_pretrained(tmp_path / "clip")
    tok = conversation_tokenizer()
    lm = vlkit.create_model("llama-tiny", vocab_size=128, bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)  # fmt: skip
    lm.save_pretrained(tmp_path / "lm")
    common = ["train", "--train.batch_size", "4", "--train.max_steps", "2", "--train.log_every", "1",
              "--train.progress", "false", "--train.plots", "false", "--train.threads", "1", "--data.train_size",
              "8", "--data.val_size", "4", "--optim.warmup_steps", "1", "--eval.batch_size", "4", "--set",
              "model.preset=blip2-tiny"]  # fmt: skip
    s1 = ["--set", "task.name=blip2-stage1", "--set", "task.tokenizer=shapes", "--set",
          f"task.vision_model={tmp_path / 'clip'}", "--train.output_dir", str(tmp_path / "s1")]  # fmt: skip
    assert main([*common, *s1]) == 0
    out = capsys.readouterr().out
    assert "ITC retrieval Recall@1 on 4 held-out images" in out and ": unchanged" in out, out[-1500:]
    s2 = ["--set", "task.name=blip2-stage2", "--set", "task.tokenizer=conversations", "--set",
          f"task.stage1={tmp_path / 's1' / 'model'}", "--set", f"task.llm={tmp_path / 'lm'}", "--set",
          "task.vqa_prompt=question: {} answer:", "--set", "task.caption_eval_images=4", "--set",
          "task.vqa_eval_questions=4", "--set", "task.max_new_tokens=3", "--train.output_dir", str(tmp_path / "s2")]  # fmt: skip
    assert main([*common, *s2]) == 0
    out = capsys.readouterr().out
    assert "zero-shot VQA accuracy on 4 held-out questions" in out and "captions of 4 held-out images" in out
    assert "frozen image encoder and LLM" in out and ": unchanged" in out
    trained = vlkit.from_pretrained(tmp_path / "s2" / "model")
    for mine, theirs in ((trained.vision, clip.visual), (trained.language_model, lm)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert trained.config.llm_type == "llama" and trained.config.vision == clip.config.vision


def test_the_demo_stage1_config_builds_a_width_64_qformer_over_the_clip_tower(tmp_path):
    """configs/blip2-shapes-stage1.yaml as the demo runs it (its tower swapped for a fresh CLIP):
    the Q-Former is width 64 (4 heads of 16; width 32 lost the position: docs/blip2.md), the
    tower's weights are loaded as they are and the trained parts are re-initialised from init_std."""
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "blip2-shapes-stage1.yaml").read_text())
    clip = vlkit.create_model("clip-tiny", vision={"act": "gelu"})
    clip.save_pretrained(tmp_path / "clip")
    task = TaskConfig.from_value({**config["task"], "vision_model": str(tmp_path / "clip")})
    blip2 = get_recipe(task, config["model"]).build_model().blip2
    q = blip2.config.qformer
    assert (q.hidden_size, q.num_heads, q.intermediate_size, q.num_layers) == (64, 4, 128, 2)
    assert q.cross_attention_layers == [0] and q.vocab_size == shapes_tokenizer().vocab_size + 1
    assert blip2.config.vision == clip.config.vision
    assert all(torch.equal(a, b) for a, b in zip(blip2.vision.state_dict().values(), clip.visual.state_dict().values()))
    assert 0.07 < blip2.qformer.query_tokens.std().item() < 0.13  # N(0, init_std=0.1)
