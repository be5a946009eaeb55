"""train.compile: the compiled forward + losses give the eager step's losses and gradients, as one
graph for CLIP (no host synchronisation in the step), and a run with it trains as the eager one.

The tests compile with the aot_eager backend: Dynamo and AOTAutograd trace the same forward and
backward graphs inductor would get (fullgraph fails on any host sync), without generating code;
inductor's code generation for even a one-block tiny CLIP takes about a minute of CPU time on
this project's 2-core machine, too long for the suite."""

import json

import pytest
import torch

import vlkit
from helpers import TINY_CLIP
from vlkit.tasks import CLIPTask
from vlkit.train import load_config, train
from vlkit.train.compile import CompiledLosses

TINY = [
    *TINY_CLIP,
    "train.batch_size=8",
    "train.log_every=1",
    "train.progress=false",
    "train.plots=false",
    "train.threads=1",
    "optim.warmup_steps=2",
    "optim.lr=3e-3",
    "data.train_size=48",
    "data.val_size=0",
]


@pytest.fixture(autouse=True)
def compile_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))


def tiny_clip():
    torch.manual_seed(0)
    return vlkit.create_model("clip-tiny", vision={"image_size": 16, "width": 32, "mlp_dim": 64, "num_heads": 2},
                              text={"width": 32, "mlp_dim": 64, "num_heads": 2}, embed_dim=16)  # fmt: skip


def right_padded_batch(B=6, T=9, seed=0):
    """Captions of different lengths, padded on the right as the tokenizers pad (end token 49407)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    for row in range(B):
        n = 3 + row % (T - 2)
        ids[row, n - 1], ids[row, n:], mask[row, n:] = 49407, 0, 0
    return {"pixel_values": torch.randn(B, 3, 16, 16, generator=g), "input_ids": ids, "attention_mask": mask}


def grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_clip_features_do_not_need_the_padding_mask_of_right_padded_captions():
    model, batch = tiny_clip(), right_padded_batch()
    with torch.no_grad():
        masked = model.encode_text(batch["input_ids"], batch["attention_mask"], normalize=True)
        task = CLIPTask().features(model, batch)["text_features"]
    assert torch.allclose(task, masked, atol=1e-6)


def test_compiled_clip_step_is_one_graph_with_the_eager_losses_and_gradients():
    model, task = tiny_clip(), CLIPTask()
    notes = []
    compiled = CompiledLosses(task.losses, backend="aot_eager", on_note=notes.append)
    for seed in (0, 1):  # the second step runs the compiled graph without tracing again
        batch = right_padded_batch(seed=seed)
        model.zero_grad(set_to_none=True)
        eager = task.losses(model, batch)["contrastive_loss"]
        eager.backward()
        expected = grads(model)
        model.zero_grad(set_to_none=True)
        loss = compiled(model, batch)["contrastive_loss"]
        loss.backward()
        assert abs(loss.item() - eager.item()) < 1e-5
        got = grads(model)
        assert got.keys() == expected.keys()
        assert all(torch.allclose(got[k], expected[k], atol=1e-5) for k in expected)
    assert compiled.fullgraph and notes == []  # fullgraph: no graph break, so no .item() or host sync


def test_a_step_that_breaks_the_graph_falls_back_with_a_note():
    model, task = tiny_clip(), CLIPTask()

    def losses_with_a_sync(model, batch):
        out = task.losses(model, batch)
        if out["contrastive_loss"].item() > -1:  # reads the value on the host: a graph break
            return out
        return {}

    notes = []
    compiled = CompiledLosses(losses_with_a_sync, backend="eager", on_note=notes.append)
    batch = right_padded_batch()
    loss = compiled(model, batch)["contrastive_loss"]
    assert not compiled.fullgraph and len(notes) == 1 and "graph breaks" in notes[0]
    assert abs(loss.item() - task.losses(model, batch)["contrastive_loss"].item()) < 1e-6


def test_a_run_with_train_compile_trains_as_the_eager_run(tmp_path, capsys):
    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r.get("split") == "train"]

    steps = ["train.max_steps=4", "eval.zeroshot=false", "eval.retrieval=false"]
    train(load_config(None, [*TINY, *steps, f"train.output_dir={tmp_path / 'eager'}"]))
    train(
        load_config(
            None,
            [
                *TINY,
                *steps,
                f"train.output_dir={tmp_path / 'compiled'}",
                "train.compile=true",
                "train.compile_backend=aot_eager",
            ],
        )  # fmt: skip
    )
    assert "graph breaks" not in capsys.readouterr().out
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 4
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4
    assert compiled[-1] < compiled[0]  # it trains
