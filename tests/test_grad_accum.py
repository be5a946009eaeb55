"""Gradient accumulation (``train.accum_steps``): for CLIP (GradCache) the gradient of k
micro-batches equals that of the whole batch, with dropout replayed bit for bit; for a task that is
not contrastive it is the weighted mean of the micro-batch gradients; under torchrun it equals the
unsplit run; a bad value is a one-line error."""

import json
from types import SimpleNamespace

import pytest
import torch

from helpers import TINY_CLIP, as_flags, torchrun_train
from vlkit.models.clip import CLIP, CLIPConfig, CLIPTextConfig, clip_vision_config
from vlkit.tasks import CLIPTask, FeatureTask, VQATask
from vlkit.train import accumulate, load_config, train

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_clip(dropout: float = 0.0, seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    vision = clip_vision_config(
        image_size=16, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64, dropout=dropout
    )
    text = CLIPTextConfig(vocab_size=64, context_length=8, width=32, depth=2, num_heads=2, mlp_dim=64, dropout=dropout)
    return CLIP(CLIPConfig(vision=vision, text=text, embed_dim=16))


def clip_batch(n: int, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 60, (n, 8), generator=g)
    ids[:, -1] = 63  # end-of-text: the largest id, where the text tower pools
    return {
        "pixel_values": torch.randn(n, 3, 16, 16, generator=g),
        "input_ids": ids,
        "attention_mask": torch.ones(n, 8, dtype=torch.long),
        "captions": [f"caption {i}" for i in range(n)],
        "skipped": [],
    }


def recipe_of(task, name="clip"):
    return SimpleNamespace(name=name, task=task, losses=task.losses)


def grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(got: dict, want: dict, rel: float = 1e-5) -> None:
    assert set(got) == set(want) and "logit_scale" in want
    for k in want:
        scale = want[k].abs().max().item()
        assert scale > 0, k
        assert (got[k] - want[k]).abs().max().item() <= rel * scale, k


def run_backward(model, recipe, batch, accum_steps):
    model.zero_grad(set_to_none=True)
    n = len(batch["captions"])
    loss, losses = accumulate.backward(model, recipe, batch, n, accum_steps=accum_steps, device=CPU, precision="fp32")
    return loss, losses, grads(model)


@pytest.mark.parametrize("k, n", [(4, 8), (3, 7)])
def test_clip_gradcache_gradient_equals_the_whole_batch(k, n):
    model, batch, task = tiny_clip(), clip_batch(n), CLIPTask()
    assert isinstance(task, FeatureTask)
    loss1, losses1, want = run_backward(model, recipe_of(task), batch, 1)
    loss_k, losses_k, got = run_backward(model, recipe_of(task), batch, k)
    assert loss_k.item() == pytest.approx(loss1.item(), rel=1e-6)  # the logged loss is the whole batch's
    assert losses_k["contrastive_loss"].item() == pytest.approx(losses1["contrastive_loss"].item(), rel=1e-6)
    assert_same_gradients(got, want)
    # plain accumulation (each micro-batch's loss alone) would not be the same: the test can tell
    model.zero_grad(set_to_none=True)
    micro = accumulate.split_batch(batch, n, k)
    accumulate.summed_backward(model, task.losses, micro, device=CPU, precision="fp32")
    plain = grads(model)
    assert (plain["logit_scale"] - want["logit_scale"]).abs().item() > 1e-3 * want["logit_scale"].abs().item()


class PairIdCLIPTask(CLIPTask):
    """CLIPTask whose features also carry an integer pair id per sample (no gradient) and a
    constant float feature (no graph); the loss checks it received the whole batch's ids."""

    def features(self, model, batch):
        out = super().features(model, batch)
        n = len(out["image_features"])
        ids = torch.tensor([int(c.split()[-1]) for c in batch["captions"]])
        return {**out, "pair_ids": ids, "weights": torch.ones(n)}

    def loss_from_features(self, model, features):
        assert features["pair_ids"].tolist() == list(range(len(features["pair_ids"])))
        assert not features["pair_ids"].requires_grad
        return super().loss_from_features(model, features)


def test_features_without_gradients_pass_through():
    model, batch = tiny_clip(), clip_batch(6)
    _, _, want = run_backward(model, recipe_of(CLIPTask()), batch, 1)
    _, _, got = run_backward(model, recipe_of(PairIdCLIPTask()), batch, 3)
    assert_same_gradients(got, want)


class RecordingCLIPTask(CLIPTask):
    """CLIPTask that keeps every ``features`` output (pass 1 and pass 2 of GradCache)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def features(self, model, batch):
        out = super().features(model, batch)
        self.seen.append({k: v.detach().clone() for k, v in out.items()})
        return out


def test_dropout_is_replayed_in_the_second_pass():
    k, n = 4, 8
    model, batch = tiny_clip(dropout=0.2), clip_batch(n)
    model.train()
    micro = [b for b, _ in accumulate.split_batch(batch, n, k)]

    # the reference: the k micro-batches' forwards in one graph, the loss on all, one backward
    torch.manual_seed(5)
    task = CLIPTask()
    parts = [task.features(model, b) for b in micro]
    whole = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    ref_loss = task.loss_from_features(model, whole)["contrastive_loss"]
    model.zero_grad(set_to_none=True)
    ref_loss.backward()
    want = grads(model)
    ref_next = torch.rand(3)  # where the random stream continues

    torch.manual_seed(5)
    recording = RecordingCLIPTask()
    loss, _, got = run_backward(model, recipe_of(recording), batch, k)
    got_next = torch.rand(3)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert_same_gradients(got, want)
    assert torch.equal(got_next, ref_next)
    # pass 1 and pass 2 see bit-identical features: the dropout masks were replayed
    first, second = recording.seen[:k], recording.seen[k:]
    assert len(second) == k
    for a, b in zip(first, second):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # and dropout does act: another draw gives other features
    other = task.features(model, micro[0])
    assert not torch.equal(other["image_features"], first[0]["image_features"])


def vqa_setup(n: int):
    from vlkit.data.synthetic import ShapesDataset
    from vlkit.train.recipes import BLIPVQARecipe

    torch.manual_seed(0)
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes", init_std=0.1)
    pair = recipe.build_model()
    ds = ShapesDataset(size=n, image_size=32, transform=recipe.transform(pair))
    return pair.vqa.eval(), recipe.collate()([ds[i] for i in range(n)])


def test_a_task_that_is_not_contrastive_accumulates_the_mean():
    model, batch = vqa_setup(6)
    task = VQATask()
    assert not isinstance(task, FeatureTask)
    # every answer of the shapes is one word: the same number of label tokens per sample, so the
    # token mean of the whole batch is the sample-weighted mean of the micro-batches' token means
    assert len(set(batch["answer_attention_mask"].sum(1).tolist())) == 1
    loss1, _, want = run_backward(model, recipe_of(task, "vqa"), batch, 1)
    for k in (2, 3, 4):  # 4: micro-batches of 2, 2, 1, 1 samples weighted by their share
        loss_k, losses_k, got = run_backward(model, recipe_of(task, "vqa"), batch, k)
        assert loss_k.item() == pytest.approx(loss1.item(), rel=1e-6)
        assert losses_k["vqa_loss"].item() == pytest.approx(loss1.item(), rel=1e-6)
        assert set(got) == set(want)
        for name in want:
            assert (got[name] - want[name]).abs().max().item() <= 1e-5 * want[name].abs().max().item() + 1e-12, name


def test_split_batch_slices_per_sample_values():
    batch = clip_batch(7)
    batch["skipped"] = ["one"]
    batch["extra"] = "kept"
    parts = accumulate.split_batch(batch, 7, 3)
    assert [m for _, m in parts] == [3, 2, 2]
    assert [len(p["captions"]) for p, _ in parts] == [3, 2, 2] and parts[1][0]["captions"] == ["caption 3", "caption 4"]
    assert all(p["extra"] == "kept" and p["skipped"] == [] for p, _ in parts)
    assert torch.equal(torch.cat([p["input_ids"] for p, _ in parts]), batch["input_ids"])
    assert [m for _, m in accumulate.split_batch(batch, 2, 4)] == [1, 1]  # fewer samples than micro-batches


def test_accum_steps_zero_is_a_one_line_error(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"^train\.accum_steps must be at least 1, got 0$"):
        load_config(None, ["train.accum_steps=0"]).check()
    from vlkit.cli import main

    assert main(["train", "--set", "train.accum_steps=0", "--set", f"train.output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["vlkit train: error: train.accum_steps must be at least 1, got 0"]


TINY = [
    *TINY_CLIP,
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=0",
    "optim.lr=3e-3",
    "optim.grad_clip=0",
    "data.num_workers=0",
    "data.train_size=64",
    "data.val_size=0",
    "train.max_steps=2",
    "train.device=cpu",
]


def first_moments(out):
    """AdamW's first moments after the run (after one step: 0.1 x the gradient), by parameter."""
    ckpt = torch.load(next((out / "checkpoints").iterdir()), map_location="cpu", weights_only=False)
    return [s["exp_avg"] for _, s in sorted(ckpt["optimizer"]["state"].items())], ckpt["model"]


def train_losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("split") == "train"]


def test_accumulation_in_one_process_follows_the_whole_batch(tmp_path):
    one = train(load_config(None, TINY + ["train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"]))
    acc = train(
        load_config(None, TINY + ["train.batch_size=2", "train.accum_steps=4", f"train.output_dir={tmp_path / 'acc'}"])
    )
    assert one.step == acc.step == 2
    assert train_losses(tmp_path / "acc") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-5)


@pytest.mark.slow
def test_two_processes_with_accumulation_match_one_process_on_the_global_batch(tmp_path):
    one_step = [*TINY, "train.max_steps=1"]
    proc = torchrun_train(
        as_flags(one_step + ["train.batch_size=2", "train.accum_steps=2", f"train.output_dir={tmp_path / 'ddp'}"])
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "batch 4 (2 micro-batches of 2) x 2 process(es)" in proc.stdout
    train(load_config(None, one_step + ["train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"]))
    assert train_losses(tmp_path / "ddp") == pytest.approx(train_losses(tmp_path / "one"), rel=1e-5)
    got, got_weights = first_moments(tmp_path / "ddp")
    want, want_weights = first_moments(tmp_path / "one")
    assert len(got) == len(want)
    # the first step's gradients, every parameter (the temperature too). (Not the weights: Adam's
    # first step is lr x sign(gradient), which turns float noise on zero gradients, such as the
    # attention key bias's, into full steps.)
    for a, b in zip(got, want):
        assert (a - b).abs().max().item() <= 1e-5 * b.abs().max().item() + 1e-12
    assert got_weights.keys() == want_weights.keys()
