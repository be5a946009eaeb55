"""BLIP-2's training (tasks/blip2.py, the blip2-stage1 / blip2-stage2 recipes): each loss on a
hand-sized example, a learning test per stage, the frozen parts through the real loop, config errors."""

from __future__ import annotations

import math

import pytest
import torch

import vlkit
from helpers import torchrun_train
from vlkit.cli import main
from vlkit.data.synthetic import ShapesDataset, shapes_tokenizer
from vlkit.losses.itm import sample_itm_negatives
from vlkit.tasks.blip2 import Blip2Stage1Task, query_itc_loss, query_similarities
from vlkit.train.recipes import get_recipe
from vlkit.train.recipes.blip2 import Blip2Stage2Options, Stage2Collator

TINY_RUN = ["--train.batch_size", "8", "--train.log_every", "2", "--train.progress", "false", "--train.plots", "false",
            "--train.threads", "1", "--data.train_size", "24", "--data.val_size", "8", "--optim.warmup_steps", "1",
            "--set", "task.tokenizer=shapes"]  # fmt: skip


def test_itc_is_the_best_query_similarity_against_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    B, Q, D, scale = 3, 4, 5, 7.0
    img = torch.nn.functional.normalize(torch.randn(B, Q, D, generator=g, dtype=torch.float64), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(B, D, generator=g, dtype=torch.float64), dim=-1)
    sim = [[scale * max(float(img[i, q] @ txt[j]) for q in range(Q)) for j in range(B)] for i in range(B)]
    i2t = sum(-sim[i][i] + math.log(sum(math.exp(s) for s in sim[i])) for i in range(B)) / B
    t2i = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(B))) for j in range(B)) / B
    sim_i2t, sim_t2i, offset = query_similarities(img, txt, scale)
    assert offset == 0 and torch.equal(sim_t2i, sim_i2t.t())
    assert (sim_i2t - torch.tensor(sim, dtype=torch.float64)).abs().max().item() < 1e-12
    loss = query_itc_loss(sim_i2t, sim_t2i)
    assert loss.dtype == torch.float64 and loss.item() == pytest.approx((i2t + t2i) / 2, abs=1e-12)


def test_itm_negatives_are_never_the_positive_nor_an_equal_caption():
    g = torch.Generator().manual_seed(0)
    B, Q, D = 6, 3, 4
    img = torch.nn.functional.normalize(torch.randn(B, Q, D, generator=g), dim=-1)
    txt = img[:, 0].clone()  # each text's best match is its own image: the positive dominates
    sim_i2t, sim_t2i, _ = query_similarities(img, txt, 50.0)
    ids = torch.tensor([0, 0, 1, 2, 3, 4])  # samples 0 and 1 share a caption
    for _ in range(100):
        text_idx, image_idx = sample_itm_negatives(sim_i2t, sim_t2i, 0, ids, ids, generator=g)
        rows = torch.arange(B)
        assert (text_idx != rows).all() and (image_idx != rows).all()
        assert (ids[text_idx] != ids).all() and (ids[image_idx] != ids).all()


def test_itg_labels_start_with_dec_and_ignore_dec_and_padding():
    task = Blip2Stage1Task(dec_token_id=48)
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    mask = (ids != 0).long()
    dec_ids, labels = task.itg_labels(ids, mask)
    assert dec_ids[:, 0].tolist() == [48, 48] and torch.equal(dec_ids[:, 1:], ids[:, 1:])
    assert labels.tolist() == [[-100, 5, 6, 3, -100], [-100, 7, 3, -100, -100]]


def test_stage2_labels_score_the_target_only():
    tok = shapes_tokenizer()
    collate = Stage2Collator(tok, Blip2Stage2Options(tokenizer="shapes", text="both", vqa_prompt="what {} answer"))
    items = [
        {"index": 0, "pixel_values": torch.zeros(3, 8, 8), "caption": "a red circle", "question": "q?", "answer": "red"},
        {"index": 1, "pixel_values": torch.zeros(3, 8, 8), "caption": "a red circle", "question": "what colour is it?",
         "answer": "red"},
    ]  # fmt: skip
    batch = collate(items)
    ids, labels, mask = batch["llm_input_ids"], batch["llm_labels"], batch["llm_attention_mask"]
    caption = tok.encode("a red circle")
    assert ids[0, : len(caption) + 2].tolist() == [tok.cls_token_id, *caption, tok.sep_token_id]
    assert labels[0].tolist()[: len(caption) + 2] == [-100, *caption, tok.sep_token_id]  # no prompt: BOS alone
    prompt = tok.encode("what what colour is it? answer")
    red = tok.encode("red")
    assert ids[1].tolist() == [tok.cls_token_id, *prompt, *red, tok.sep_token_id]
    assert labels[1].tolist() == [-100] * (1 + len(prompt)) + [*red, tok.sep_token_id]
    assert (labels[mask == 0] == -100).all()
    # the model's logits are at the text positions only: the queries (soft prompt) are never scored
    model = get_recipe_model("blip2-stage2", text="both")
    logits = model(torch.zeros(2, 3, 32, 32), ids, mask)
    assert logits.shape[:2] == ids.shape


def get_recipe_model(name: str, **options):
    from vlkit.train.config import TaskConfig

    task = TaskConfig.from_value({"name": name, "tokenizer": "shapes", **options})
    recipe = get_recipe(task, {"preset": "blip2-tiny", "qformer": {"dropout": 0.0, "attn_dropout": 0.0}})
    return recipe.build_model()


def _learning_run(name: str, seed: int, steps: int, llm_std: float = 0.2, **options) -> tuple[float, float]:
    from vlkit.train.config import TaskConfig

    torch.manual_seed(seed)
    task = TaskConfig.from_value({"name": name, "tokenizer": "shapes", **options})
    recipe = get_recipe(task, {"preset": "blip2-tiny", "qformer": {"dropout": 0.0, "attn_dropout": 0.0}})
    model = recipe.build_model().train()
    llm_model = getattr(model, "blip2", model).language_model
    if llm_model is not None:  # a random LLM at std 0.02 ignores its context: give it one that reads it
        with torch.no_grad():
            for p in llm_model.parameters():
                if p.dim() == 2:
                    p.normal_(std=llm_std)
    ds = ShapesDataset(size=8, image_size=32, transform=recipe.transform(model), captions="full", seed=seed)
    batch = recipe.collate()([ds[i] for i in range(len(ds))])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        loss = sum(recipe.losses(model, batch).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    return losses[0], min(losses[-3:])


@pytest.mark.parametrize("seed", [0, 1])
def test_stage1_learns(seed):
    first, last = _learning_run("blip2-stage1", seed, 30)  # ITC + ITM + ITG: about 6.7 -> 4.1
    assert math.isfinite(last) and last < 0.7 * first, (first, last)


@pytest.mark.parametrize("seed", [0, 1])
def test_stage2_learns(seed):
    first, last = _learning_run("blip2-stage2", seed, 30, text="both")  # about 4.4 -> 2.0, the LLM frozen
    assert math.isfinite(last) and last < 0.6 * first, (first, last)


def test_frozen_parts_stay_bit_identical_through_vlkit_train(tmp_path, capsys):
    tok = shapes_tokenizer()
    s1 = vlkit.create_model(
        "blip2-tiny", llm_type=None, llm=None, itg_head=True, qformer={"vocab_size": tok.vocab_size + 1}
    )
    s1.save_pretrained(tmp_path / "start")
    out1 = tmp_path / "s1"
    args = ["train", *TINY_RUN, "--train.max_steps", "3", "--set", "model.pretrained=" + str(tmp_path / "start")]
    assert main([*args, "--set", "task.name=blip2-stage1", "--train.output_dir", str(out1)]) == 0
    assert f"({38196:,} of {86340:,} trainable)" in capsys.readouterr().out
    trained1 = vlkit.from_pretrained(out1 / "model")
    assert all(
        torch.equal(a, b) for a, b in zip(s1.vision.state_dict().values(), trained1.vision.state_dict().values())
    )
    assert not torch.equal(s1.qformer.query_tokens, trained1.qformer.query_tokens)  # the Q-Former did train

    llm = vlkit.create_model("gpt-tiny", vocab_size=tok.vocab_size, bos_token_id=tok.cls_token_id,
                             eos_token_id=tok.sep_token_id)  # fmt: skip
    llm.save_pretrained(tmp_path / "llm")
    out2 = tmp_path / "s2"
    stage2 = ["--set", "task.name=blip2-stage2", "--set", f"task.stage1={out1 / 'model'}", "--set",
              f"task.llm={tmp_path / 'llm'}"]  # fmt: skip
    assert main([*args, *stage2, "--train.output_dir", str(out2)]) == 0
    trained2 = vlkit.from_pretrained(out2 / "model")
    for before, after in ((trained1.vision, trained2.vision), (llm, trained2.language_model)):
        assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    ckpt = torch.load(sorted((out2 / "checkpoints").glob("*.pt"))[-1], weights_only=False)
    held = sum(s["exp_avg"].numel() for s in ckpt["optimizer"]["state"].values())
    options = {"stage1": str(out1 / "model"), "llm": str(tmp_path / "llm")}
    built = get_recipe_model("blip2-stage2", **options)  # what the run trained: the recipe's model
    trainable = [(n, p) for n, p in built.named_parameters() if p.requires_grad]
    assert not [n for n, _ in trainable if n.startswith(("vision.", "language_model."))]
    in_groups = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    assert in_groups == len(trainable)  # the optimizer holds the trainable tensors only
    assert held == sum(p.numel() for _, p in trainable)  # and every one of them got a gradient (state)
    total = sum(p.numel() for p in built.parameters())
    assert f"({held:,} of {total:,} trainable)" in capsys.readouterr().out


def test_config_errors_are_one_line(tmp_path, capsys):
    base = ["train", *TINY_RUN, "--train.max_steps", "1", "--train.output_dir", str(tmp_path / "run")]
    assert main([*base, "--set", "task.name=blip2-stage2", "--set", "task.text=poem"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlkit train: error:") and "text must be one of" in err and "\n" not in err
    assert main([*base, "--set", "task.name=blip2-stage2", "--set", f"task.stage1={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "task.stage1: no model folder" in err and "\n" not in err


def test_stage1_runs_through_a_ddp_wrapper_and_refuses_a_bare_blip2_in_one(tmp_path):
    import torch.distributed as dist

    from vlkit.train.config import TaskConfig

    recipe = get_recipe(
        TaskConfig.from_value({"name": "blip2-stage1", "tokenizer": "shapes"}), {"preset": "blip2-tiny"}
    )
    model = recipe.build_model()
    ds = ShapesDataset(size=4, image_size=32, transform=recipe.transform(model), captions="full")
    batch = recipe.collate()([ds[i] for i in range(4)])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
        sum(recipe.losses(wrapped, batch).values()).backward()  # the first pass through the wrapper
        assert model.blip2.qformer.query_tokens.grad is not None and model.blip2.itg_head.dense.weight.grad is not None
        assert all(p.grad is None for p in model.blip2.vision.parameters())
        with pytest.raises(ValueError, match="bare BLIP-2 on one process"):
            recipe.losses(torch.nn.parallel.DistributedDataParallel(model.blip2), batch)
    finally:
        dist.destroy_process_group()


def test_default_options_build():
    for name in ("blip2-stage1", "blip2-stage2"):
        recipe = get_recipe(name, {"preset": "blip2-tiny"})
        assert recipe.build_model().parameter_counts()["trainable"] > 0


def test_both_stages_train_on_two_processes(tmp_path):
    """Under torchrun stage 1's first pass goes through the DDP wrapper and stage 2 waits for no
    gradient of an unused part (both failed before they were handled)."""
    common = [*TINY_RUN, "--train.batch_size", "4", "--train.max_steps", "2", "--set", "model.preset=blip2-tiny"]
    r1 = torchrun_train([*common, "--set", "task.name=blip2-stage1", "--train.output_dir", str(tmp_path / "s1")])
    assert r1.returncode == 0, r1.stderr[-2000:]
    stage2 = ["--set", "task.name=blip2-stage2", "--set", f"task.stage1={tmp_path / 's1' / 'model'}"]
    r2 = torchrun_train([*common, *stage2, "--train.output_dir", str(tmp_path / "s2")])
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "2 process(es)" in r2.stdout and (tmp_path / "s2" / "model" / "config.json").is_file()
