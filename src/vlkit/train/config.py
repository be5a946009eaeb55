"""Training configuration: one YAML or JSON file, every field overridable from the command line.

    task: clip                                              # or {name: blip, tokenizer: shapes, prompt: ...}
    model: {preset: clip-tiny, vision: {image_size: 64}}   # preset + create_model overrides
    data:  {kind: shapes, train_size: 100000}
    optim: {lr: 1e-3, weight_decay: 0.1, warmup_steps: 100}
    train: {batch_size: 128, max_steps: 1000, output_dir: runs/clip}
    eval:  {batch_size: 256}
    loss:  {chunk_size: 512}                                # contrastive logits in 512 x 512 tiles

``model`` is free-form (``preset``, ``pretrained`` and any config field of the family, nested);
``task`` is the recipe's name and its options (a plain name keeps the defaults): each recipe
declares a frozen ``Options`` dataclass (:mod:`vlkit.train.recipes`); it and the other sections
are dataclasses whose unknown fields are errors. Overrides are
``section.field=value`` strings: ``optim.lr=1e-3``, ``model.vision.width=128``,
``task.prompt="a picture of "``, ``task=blip`` (the recipe, keeping the options given); values are
converted to the field's type (YAML syntax for lists and dicts).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..runtime import PRECISIONS
from .strategy import STRATEGIES

COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # train.compile_backend: torch.compile backends


@dataclass
class DataConfig:
    kind: str = (
        "shapes"  # "shapes" (built-in, synthetic), "folder" (your images + CSV/JSONL) or "webdataset" (tar shards)
    )
    # shapes: samples per training epoch and held-out validation images; rendered at the model's image size
    train_size: int = 100_000
    val_size: int = 1_000
    seed: int = 0
    # folder: annotation files (CSV with a header, or JSONL) and the image folder
    train_annotations: str | None = None
    val_annotations: str | None = None
    root: str | None = None  # image paths are relative to this (default: each annotation file's folder)
    image_key: str | None = None  # column names (default: image/filepath/..., caption/text/title)
    caption_key: str | None = None
    # webdataset: shards as a brace pattern (shards/{000000..000099}.tar), a list, or a .txt file listing
    # them (local paths, pipe: or http URLs); samples per epoch (a stream has no length of its own); the
    # sample shuffle buffer of each data worker. Validation: val_annotations (a folder) when given.
    train_shards: str | list[str] | None = None
    train_num_samples: int | None = None
    shuffle_buffer: int = 1000
    augment: bool = False  # random-resized-crop augmentation of training images (vlkit.image_transform)
    num_workers: int = 0
    # batches of texts of similar lengths (text data: shapes-text, text): little padding, about twice the
    # steps per second on texts of mixed lengths; every sample still once an epoch (vlkit.data.loader).
    # A batch then holds one kind of text: on the shapes LLM that slowed learning more (docs/vlm.md)
    group_by_length: bool = False


@dataclass
class OptimConfig:
    lr: float = 5e-4
    weight_decay: float = 0.2  # not applied to norms, biases, the temperature, or 1-D embeddings (as open_clip)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    warmup_steps: int = 100  # linear warmup from 0 to lr
    schedule: str = "cosine"  # "cosine" (to min_lr at max_steps) or "constant" (after warmup)
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    batch_size: int = 128  # per process; the global batch is batch_size x number of processes
    # micro-batches of batch_size per optimizer step: the step's batch is batch_size x accum_steps (per
    # process), its gradient that of the whole batch (contrastive tasks: GradCache, vlkit.train.accumulate)
    accum_steps: int = 1
    max_steps: int = 1_000
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_every: int = 0  # 0: checkpoint only at the end
    keep_checkpoints: int = 2  # the latest N checkpoints are kept
    output_dir: str = "runs/clip"
    seed: int = 0
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
    precision: str = "auto"  # "auto" (bf16 on CUDA and for wide models on bf16 CPUs: docs/precision.md), "bf16", "fp32"
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    strategy: str = (
        "ddp"  # under torchrun: "ddp" (replicated) or "fsdp" (FSDP2, sharded per Block); vlkit.train.strategy
    )
    activation_checkpointing: bool = False  # recompute each Block's activations in the backward pass
    # torch.compile the step's forward + losses (vlkit.train.compile): fullgraph where the task allows,
    # else with graph breaks (a note says so). The first steps compile (seconds to minutes); later
    # steps run the compiled kernels. compile_backend: torch.compile's backend ("inductor" generates
    # kernels; "aot_eager" traces the same forward and backward graphs without generating code).
    compile: bool = False
    compile_backend: str = "inductor"
    # the device's peak FLOP/s for model FLOPs utilisation (mfu in the log and the progress bar);
    # None looks the device up in vlkit.train.flops.PEAK_FLOPS (H100, H200, A100 at bf16), and an
    # unknown device or the CPU logs flops_per_step without mfu
    peak_flops: float | None = None
    progress: bool = True  # tqdm progress bar
    plots: bool = True  # loss curve and similarity matrix as PNG (needs matplotlib)


@dataclass
class EvalConfig:
    batch_size: int = 256
    zeroshot: bool = True  # when the validation data has zero-shot labels (built-in shapes)
    retrieval: bool = True


@dataclass
class LossConfig:
    """How the task's losses are computed (not what they are: that is the task's)."""

    # None: the contrastive loss (CLIP's, BLIP's and ALBEF's ITC) builds the batch's B x B_global
    # logits at once; an integer: the same loss and gradients in chunk x chunk tiles of them,
    # forward and backward (vlkit.losses.tiled_contrastive), so memory grows with B, not B^2.
    # Worth it from a few thousand pairs per batch; see docs/contrastive-at-scale.md for speeds.
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer or null (no tiling), got {self.chunk_size}")


DEFAULT_MODEL = {"preset": "clip-tiny"}
SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig, "eval": EvalConfig, "loss": LossConfig}


def _recipes() -> dict[str, Any]:
    from .recipes import RECIPES  # the recipes import models and data: loaded when a task is read

    return RECIPES


@dataclass
class TaskConfig:
    """The ``task:`` section: which recipe trains (``name``) and its options (an instance of the
    recipe's ``Options`` dataclass; its defaults when not given)."""

    name: str = "clip"
    options: Any = None

    def __post_init__(self) -> None:
        recipes = _recipes()
        if self.name not in recipes:
            raise ValueError(f"task.name: unknown task {self.name!r}; expected one of {sorted(recipes)}")
        options_class = recipes[self.name].Options
        if self.options is None:
            self.options = options_class()
        elif not isinstance(self.options, options_class):
            raise TypeError(
                f"task {self.name!r} takes {options_class.__name__} options, got {type(self.options).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self.options)}

    @classmethod
    def from_value(cls, value: Any, where: str = "task") -> TaskConfig:
        """A recipe name (``"clip"``) or a mapping ``{name: ..., **options}``."""
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ValueError(
                f"{where}: expected a task name or a mapping (name: and the task's options), got {type(value).__name__}"
            )
        values = dict(value)
        name = str(values.pop("name", "clip"))
        recipes = _recipes()
        if name not in recipes:
            raise ValueError(f"{where}.name: unknown task {name!r}; expected one of {sorted(recipes)}")
        return cls(name, _section(recipes[name].Options, values, f"{where} ({name})"))


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_MODEL))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name in SECTIONS
        }
        return {"task": self.task.to_dict(), "model": copy.deepcopy(self.model), **out}

    def check(self) -> None:
        """One-line ValueErrors for values the training loop cannot run with."""
        t, o = self.train, self.optim
        for name in ("batch_size", "accum_steps", "max_steps", "log_every"):
            if getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(t, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(t, name) < 0:
                raise ValueError(f"train.{name} must be 0 (only at the end) or positive, got {getattr(t, name)}")
        if t.threads < 0:
            raise ValueError(f"train.threads must be 0 (torch's default) or positive, got {t.threads}")
        if t.strategy not in STRATEGIES:
            raise ValueError(f"train.strategy must be one of {STRATEGIES}, got {t.strategy!r}")
        if t.peak_flops is not None and not (math.isfinite(t.peak_flops) and t.peak_flops > 0):
            raise ValueError(f"train.peak_flops must be a positive number of FLOP/s or null, got {t.peak_flops}")
        if t.compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"train.compile_backend must be one of {COMPILE_BACKENDS}, got {t.compile_backend!r}")
        if t.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {t.precision!r}")
        if not math.isfinite(o.lr) or o.lr <= 0:
            raise ValueError(f"optim.lr must be a positive finite number, got {o.lr}")
        if o.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be 0 or positive, got {o.warmup_steps}")
        if not math.isfinite(o.grad_clip) or o.grad_clip < 0:
            raise ValueError(f"optim.grad_clip must be 0 (no clipping) or positive, got {o.grad_clip}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Config:
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
        known = {"task", "model", *SECTIONS}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{source}: unknown sections {sorted(unknown)}; expected some of {sorted(known)}")
        kwargs: dict[str, Any] = {}
        task = kwargs["task"] = TaskConfig.from_value(data.get("task", "clip"), f"{source}: task")
        if "model" in data:
            if not isinstance(data["model"], dict):
                raise ValueError(
                    f"{source}: model must be a mapping (preset: NAME, or pretrained: FOLDER, and overrides)"
                )
            model = copy.deepcopy(data["model"])
            if "preset" not in model and "pretrained" not in model:
                model = {**DEFAULT_MODEL, **model}
            moved = sorted(set(model) & {f.name for f in dataclasses.fields(task.options)})
            if moved:
                raise ValueError(
                    f"{source}: model.{moved[0]} is an option of the {task.name} task: set it in the "
                    f"task section (task: {{name: {task.name}, {moved[0]}: ...}}, "
                    f"or --set task.{moved[0]}=...)"
                )
            kwargs["model"] = model
        for name, section_cls in SECTIONS.items():
            if name in data:
                kwargs[name] = _section(section_cls, data[name] or {}, f"{source}: {name}")
        return cls(**kwargs)


def _section(section_cls: type, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}; expected some of {sorted(fields)}")
    hints = typing.get_type_hints(section_cls)
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    try:
        return section_cls(**kwargs)
    except ValueError as e:  # a section's own check (__post_init__)
        raise ValueError(f"{where}: {e}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert ``value`` (possibly a command-line string) to the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~"))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where) if len(inner) == 1 else value
    if isinstance(value, str) and hint is not str:
        value = _parse_scalar(value)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            if not isinstance(value, (list, tuple)) or len(value) != len(args):
                raise TypeError
            return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ValueError(f"{where}: expected {name}, got {value!r}") from None
    return value


def _parse_scalar(text: str) -> Any:
    """A command-line value: numbers (including 1e-3), booleans, null, YAML lists/dicts, else the string."""
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON (``.json``) config file as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"config file {path} is not valid {kind}: {e}") from None
    return data or {}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "model.vision.width=128"]`` applied to a nested config dict (a copy)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} names no field")
        if parts[0] == "task" and isinstance(data.get("task"), str):
            data["task"] = {"name": data["task"]}  # task: clip -> {name: clip} so that options can be set
        if parts == ["task"] and isinstance(data.get("task"), dict):
            parts = ["task", "name"]  # --set task=blip picks the recipe and keeps the options given
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {p!r} is a value, not a section")
            node = child
        # strings stay strings here; sections coerce them to the field's type, model overrides
        # (no declared types) are parsed as numbers/booleans/YAML
        node[parts[-1]] = value if parts[0] in SECTIONS or parts[0] == "task" else _parse_scalar(value)
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The defaults, updated by the file at ``path`` (if any), then by the overrides."""
    data = load_config_file(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return Config.from_dict(data, source=str(path) if path else "config")


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb and not (
            isinstance(va, (list, tuple)) and isinstance(vb, (list, tuple)) and list(va) == list(vb)
        ):
            out.append(f"{prefix}{key}")
    return out
