"""Training config: YAML/JSON files, typed command-line overrides, clear errors."""

import json

import pytest

from vlkit.cli import build_parser
from vlkit.cli.train import overrides_from_args
from vlkit.train.config import Config, apply_overrides, config_diff, load_config


def test_defaults_and_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "task: clip\nmodel: {preset: clip-tiny, vision: {image_size: 48}}\n"
        "optim: {lr: 1e-3, betas: [0.9, 0.95]}\ntrain: {max_steps: 7}\n"
    )
    cfg = load_config(p)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # PyYAML reads 1e-3 as a string
    assert cfg.optim.betas == (0.9, 0.95) and cfg.train.max_steps == 7
    assert cfg.model == {"preset": "clip-tiny", "vision": {"image_size": 48}}
    assert cfg.train.batch_size == Config().train.batch_size  # untouched fields keep their defaults


def test_json_file_and_overrides(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"train": {"max_steps": 5, "progress": True}}))
    cfg = load_config(
        p,
        [
            "optim.lr=3e-4",
            "train.progress=false",
            "model.vision.width=96",
            "model.embed_dim=32",
            "data.root=null",
            "train.output_dir=runs/x=1",
        ],
    )
    assert cfg.optim.lr == 3e-4 and cfg.train.progress is False and cfg.train.max_steps == 5
    assert cfg.model == {"preset": "clip-tiny", "vision": {"width": 96}, "embed_dim": 32}
    assert cfg.data.root is None and cfg.train.output_dir == "runs/x=1"
    # a config survives a round trip through its dict (checkpoints store it so)
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["optim.learning_rate=1"], "unknown fields \\['learning_rate'\\]"),
        (["train.max_steps=ten"], "train.max_steps: expected int, got 'ten'"),
        (["train.max_steps=1.5"], "expected int"),
        (["train.progress=3"], "expected bool"),
        (["optim.betas=[0.9]"], "expected tuple"),
        (["training.steps=3"], "unknown sections"),
        (["optim.lr"], "section.field=value"),
    ],
)
def test_bad_overrides(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "listmodel.yaml").write_text("model: [clip-tiny]\n")
    with pytest.raises(ValueError, match="model must be a mapping"):
        load_config(tmp_path / "listmodel.yaml")


def test_command_line_dotted_flags_and_set():
    args = build_parser().parse_args(
        [
            "train",
            "--set",
            "optim.lr=1e-3",
            "--optim.weight_decay",
            "0.05",
            "--train.max_steps=9",
            "--task",
            "clip",
            "--set",
            "model.vision.depth=1",
        ]
    )
    ov = overrides_from_args(args)
    cfg = load_config(None, ov)
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.05 and cfg.train.max_steps == 9
    assert cfg.model == {"preset": "clip-tiny", "vision": {"depth": 1}} and cfg.task.name == "clip"


def test_diff_and_override_copy():
    base = {"optim": {"lr": 1.0}}
    new = apply_overrides(base, ["optim.lr=2", "train.seed=3"])
    assert base == {"optim": {"lr": 1.0}}  # not modified in place
    assert config_diff(Config().to_dict(), load_config(None, ["optim.lr=2", "train.seed=3"]).to_dict()) == [
        "optim.lr",
        "train.seed",
    ]
    assert new["optim"]["lr"] == "2"  # typed later, by the section
