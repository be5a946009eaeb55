"""The config's typed task: section: a recipe name or {name, **options}; each recipe's frozen
Options dataclass validated like the other sections; recipe options are no longer read from model:."""

import dataclasses
from pathlib import Path

import pytest

from vlkit.cli import main
from vlkit.data.synthetic import ShapesDataset
from vlkit.train.config import Config, TaskConfig, load_config
from vlkit.train.recipes import (
    RECIPES,
    ALBEFRecipe,
    BLIPOptions,
    BLIPVQAOptions,
    CLIPOptions,
    Recipe,
    get_recipe,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_plain_name_and_a_mapping(tmp_path):
    assert load_config(None).task == TaskConfig("clip", CLIPOptions())
    path = tmp_path / "c.yaml"
    path.write_text(
        "task: {name: blip-vqa, tokenizer: shapes, init_std: 0.1, prompt: 'a picture of '}\n"
        "model: {preset: blip-tiny}\n"
    )
    cfg = load_config(path)
    assert cfg.task.name == "blip-vqa" and isinstance(cfg.task.options, BLIPVQAOptions)
    assert (cfg.task.options.tokenizer, cfg.task.options.init_std, cfg.task.options.prompt) == (
        "shapes",
        0.1,
        "a picture of ",
    )
    saved = cfg.to_dict()
    assert saved["task"]["name"] == "blip-vqa" and saved["task"]["vqa_weight"] == 1.0
    assert Config.from_dict(saved) == cfg  # what a checkpoint stores reads back the same
    assert Config.from_dict({"task": "albef"}).task.options.alpha == 0.4  # older checkpoints: a plain name


def test_overrides_are_coerced_and_keep_the_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: {name: blip-vqa, tokenizer: shapes}\n")
    cfg = load_config(
        path, ["task=blip", "task.init_std=0.2", "task.negatives_all_ranks=false", "task.prompt=a photo of "]
    )
    o = cfg.task.options
    assert cfg.task.name == "blip" and type(o) is BLIPOptions
    assert (o.tokenizer, o.init_std, o.negatives_all_ranks, o.prompt) == ("shapes", 0.2, False, "a photo of ")
    assert load_config(None, ["task.tokenizer=shapes"]).task == TaskConfig("clip", CLIPOptions("shapes"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.prompt = "x"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.bogus=1"], r"task \(clip\): unknown fields \['bogus'\]; expected some of \['tokenizer'\]"),
        (["task=nope"], r"unknown task 'nope'; expected one of \['albef', 'blip', 'blip-vqa', .*'clip'"),
        (["task=albef", "task.alpha=1.5"], r"task \(albef\): alpha must be in \[0, 1\], got 1.5"),
        (["task=albef", "task.mlm_probability=0"], "mlm_probability must be in"),
        (["task=blip", "task.init_std=big"], r"task \(blip\).init_std: expected float, got 'big'"),
        (["task=blip", "task.itm_rerank_k=-1"], "itm_rerank_k must be >= 0"),
        (
            ["task=blip", "model.preset=blip-tiny", "model.tokenizer=shapes"],
            "model.tokenizer is an option of the blip task",
        ),
    ],
)
def test_bad_task_sections_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_the_cli_reports_a_recipe_option_left_in_model(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("task: blip-vqa\nmodel: {preset: blip-tiny, tokenizer: shapes, init_std: 0.1}\n")
    assert main(["train", "--config", str(path), "--train.output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "vlkit train: error:" in err and "set it in the task section" in err and "Traceback" not in err


def test_albef_alpha_and_mlm_probability_are_settable():
    cfg = load_config(
        None,
        [
            "task=albef",
            "task.alpha=0.1",
            "task.mlm_probability=0.3",
            "task.tokenizer=shapes",
            "model.preset=albef-tiny",
        ],
    )
    recipe = get_recipe(cfg.task, cfg.model)
    assert isinstance(recipe, ALBEFRecipe) and recipe.task.alpha == 0.1 and recipe.task.mlm_probability == 0.3


def test_recipes_are_flat_and_declare_options_and_batch_size():
    for name, cls in RECIPES.items():
        # no recipe inherits another: each is a direct child of the one base of defaults
        assert cls.name == name and cls.__mro__[1:] == (Recipe, object), cls.__mro__
        assert dataclasses.is_dataclass(cls.Options) and cls.Options.__dataclass_params__.frozen
    recipe = get_recipe(TaskConfig("blip-vqa", BLIPVQAOptions(tokenizer="shapes")), {"preset": "blip-tiny"})
    ds = ShapesDataset(size=3, image_size=32, transform=recipe.transform(recipe.build_model()))
    batch = recipe.collate()([ds[i] for i in range(3)])
    assert recipe.batch_size(batch) == 3


def test_a_blip_vqa_run_with_task_options_through_the_cli(tmp_path, capsys):
    """Two steps of the demo config with task options from the command line: the run trains,
    evaluates and saves the tokenizer the task section named."""
    config = Path(__file__).resolve().parents[1] / "configs" / "blip-shapes.yaml"
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(config),
        "--train.output_dir",
        str(out),
        "--train.max_steps",
        "2",
        "--train.batch_size",
        "4",
        "--data.val_size",
        "8",
        "--data.num_workers",
        "0",
        "--eval.batch_size",
        "8",
        "--train.progress",
        "false",
        "--train.plots",
        "false",
        "--set",
        "task.caption_eval_images=4",
        "--set",
        "task.vqa_eval_questions=4",
        "--set",
        "task.prompt=a picture of ",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "captions of 4 held-out images" in printed and "VQA accuracy on 4 held-out questions" in printed
    import vlkit

    assert vlkit.get_tokenizer(out / "model").vocab_size == 48  # the shapes WordPiece, as task.tokenizer named


def test_a_recipe_refuses_its_options_in_the_model_spec():
    with pytest.raises(ValueError, match="model.init_std is an option of the blip task"):
        get_recipe("blip", {"preset": "blip-tiny", "init_std": 0.1})
    assert get_recipe("albef", {"preset": "albef-tiny", "init_std": 0.1}).model_spec["init_std"] == 0.1  # a model field
