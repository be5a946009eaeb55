"""The VLM demo's pipeline, tiny: a CLIP folder's image tower and an lm run's LLM put into a VLM
(task.vision_model / task.language_model), stage 1 (projector only), stage 2 with LoRA. The tower
and the LLM carry the folders' weights, and what is frozen stays so through training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import vlkit
from vlkit.train import load_config, train
from vlkit.train.recipes import get_recipe
from vlkit.train.recipes.vlm import VLMOptions

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "train.batch_size=8",
    "train.max_steps=3",
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=1",
    "optim.lr=1e-2",
    "data.num_workers=0",
    "data.train_size=64",
    "data.val_size=4",
]
LM = [
    "task=lm",
    "model.preset=llama-tiny",
    "model.vocab_size=80",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "data.kind=shapes-text",
]


def _same(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not k.endswith(skip))


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parts")
    clip = vlkit.create_model(
        "clip-tiny", vision={"depth": 3}, text={"vocab_size": 100, "context_length": 16, "depth": 1}
    )
    clip.save_pretrained(tmp / "clip")
    train(load_config(None, [*COMMON, *LM, f"train.output_dir={tmp / 'lm'}"]))
    return tmp / "clip", tmp / "lm" / "model"


def test_stages_connect_the_folders(tmp_path, parts):
    clip_dir, lm_dir = parts
    clip, lm = vlkit.from_pretrained(clip_dir), vlkit.from_pretrained(lm_dir)
    folders = [f"task.vision_model={clip_dir}", f"task.language_model={lm_dir}", "model.preset=vlm-shapes-tiny"]
    train(load_config(None, [*COMMON, "task.name=vlm-stage1", *folders, f"train.output_dir={tmp_path / 's1'}"]))
    stage1 = vlkit.from_pretrained(tmp_path / "s1" / "model")
    assert stage1.config.vision.depth == 3 and stage1.config.text.hidden_size == 32  # the folders' sizes
    assert _same(stage1.visual, clip.visual) and _same(stage1.llm, lm)  # frozen in stage 1
    start = get_recipe(load_config(None, ["task.name=vlm-stage1", *folders]).task).build_model().vlm
    assert not _same(stage1.projector, start.projector)  # what trained
    lora = ["task.lora=true", "task.lora_rank=4", "task.lora_target_modules=attn.qkv", "task.eval_conversations=2"]
    s1 = f"task.stage1_model={tmp_path / 's1' / 'model'}"
    train(load_config(None, [*COMMON, "task.name=vlm-stage2", s1, *lora, f"train.output_dir={tmp_path / 's2'}"]))
    stage2 = vlkit.from_pretrained(tmp_path / "s2" / "model")  # adapters merged
    assert _same(stage2.visual, clip.visual)
    assert _same(stage2.llm, lm, skip=("attn.qkv.weight",)) and not _same(stage2.llm, lm)
    assert (tmp_path / "s2" / "model" / "adapter" / "adapter.safetensors").is_file()


def test_parts_that_do_not_fit_are_clear_errors(parts):
    clip_dir, lm_dir = parts
    recipe = get_recipe("vlm-stage1")
    with pytest.raises(ValueError, match="not both"):
        VLMOptions(stage1_model="s1", vision_model=str(clip_dir))
    options = VLMOptions(language_model=str(clip_dir))
    with pytest.raises(TypeError, match="expected a decoder LM"):
        type(recipe)(None, options).build_model()
    with pytest.raises(TypeError, match="image tower"):
        type(recipe)(None, VLMOptions(vision_model=str(lm_dir))).build_model()
    with pytest.raises(ValueError, match="outside the 3-layer tower"):
        type(recipe)(
            {"preset": "vlm-shapes-tiny", "vision_feature_layer": -5}, VLMOptions(vision_model=str(clip_dir))
        ).build_model()
    with pytest.raises(ValueError, match="vocabulary of 80"):
        type(recipe)(
            {"preset": "vlm-shapes-tiny", "image_token_id": 90}, VLMOptions(language_model=str(lm_dir))
        ).build_model()


def test_demo_configs_name_the_demo_folders():
    stage1 = yaml.safe_load((ROOT / "configs" / "vlm-stage1.yaml").read_text())["task"]
    stage2 = yaml.safe_load((ROOT / "configs" / "vlm-stage2.yaml").read_text())["task"]
    assert stage1["vision_model"] == "runs/clip-shapes/model" and stage1["language_model"] == "runs/lm-shapes/model"
    assert stage2["stage1_model"] == "runs/vlm-stage1/model" and stage2["lora"] is True
    load_config(ROOT / "configs" / "vlm-stage2.yaml")  # valid options
