"""The VQA task (question encoded with the image, answer decoder LM loss) and the joint BLIP + VQA
task: known answers against the model's own forward, the masks and [DEC] it uses, shared encoders,
and a few steps that teach a tiny pair of BLIPs to answer."""

import pytest
import torch

import vlkit
from helpers import as_flags, torchrun_train
from vlkit.data.synthetic import ShapesDataset, shapes_tokenizer
from vlkit.losses.lm import lm_labels, lm_loss
from vlkit.tasks import BLIPTask
from vlkit.tasks.vqa import BLIPVQATask, VQATask
from vlkit.train.recipes import BLIPVQARecipe
from vlkit.train.recipes.blip import text_ids
from vlkit.train.recipes.blip_vqa import CaptionerAndVQA

pytestmark = pytest.mark.usefixtures("one_thread")


def make(n=8, seed=0):
    torch.manual_seed(seed)
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes", init_std=0.1)
    pair = recipe.build_model()
    ds = ShapesDataset(size=n, image_size=32, transform=recipe.transform(pair))
    return recipe, pair, recipe.collate()([ds[i] for i in range(n)])


def test_vqa_loss_is_the_answer_lm_loss_of_the_model():
    recipe, pair, batch = make(n=5)
    vqa = pair.vqa.eval()
    losses = VQATask().losses(vqa, batch)
    assert set(losses) == {"vqa_loss"}
    ids = batch["answer_input_ids"].clone()
    ids[:, 0] = vqa.config.text.bos_token_id  # [CLS] -> [DEC]
    mask = batch["answer_attention_mask"]
    q_ids, q_mask = batch["question_input_ids"], batch["question_attention_mask"]
    question = vqa.fused_hidden(q_ids, q_mask, vqa.image_embeds(batch["pixel_values"]))
    logits = vqa.decoder_logits(ids, mask, question, q_mask)
    expected = lm_loss(logits, lm_labels(ids, mask), label_smoothing=0.1)
    assert losses["vqa_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # the same loss from image tokens computed elsewhere
    again = VQATask().losses_from_image(vqa, batch, vqa.image_embeds(batch["pixel_values"]))["vqa_loss"]
    assert again.item() == pytest.approx(expected.item(), rel=1e-6)
    # the decoder sees only real question tokens: padding the questions further changes nothing
    padded = dict(batch)
    padded["question_input_ids"] = torch.cat([q_ids, torch.zeros(5, 3, dtype=torch.long)], 1)
    padded["question_attention_mask"] = torch.cat([q_mask, torch.zeros(5, 3, dtype=torch.long)], 1)
    assert VQATask().losses(vqa, padded)["vqa_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    # the answer's first token is [DEC], the loss covers the answer word and [SEP]
    labels = lm_labels(ids, mask)
    assert (labels[:, 1:] != -100).sum().item() == 2 * 5


def test_vqa_task_errors():
    recipe, pair, batch = make(n=2)
    with pytest.raises(ValueError, match="decoder_context='question'"):
        VQATask().losses(pair.captioner, batch)
    bad = {k: v for k, v in batch.items() if k != "answer_input_ids"}
    with pytest.raises(KeyError, match="answer_input_ids"):
        VQATask().losses(pair.vqa, bad)


def test_joint_task_shares_the_encoders_and_sums_both_tasks():
    recipe, pair, batch = make(n=6)
    assert pair.vqa.vision is pair.captioner.vision and pair.vqa.text_encoder is pair.captioner.text_encoder
    assert pair.vqa.text_decoder is not pair.captioner.text_decoder
    assert pair.vqa.config.decoder_context == "question" and not pair.vqa.config.retrieval_heads
    pair.eval()
    torch.manual_seed(1)
    losses = BLIPVQATask().losses(pair, batch)
    assert set(losses) == {"itc_loss", "itm_loss", "lm_loss", "vqa_loss"}
    torch.manual_seed(1)
    blip = BLIPTask().losses(pair.captioner, batch)
    for k, v in blip.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-6)
    assert losses["vqa_loss"].item() == pytest.approx(VQATask().losses(pair.vqa, batch)["vqa_loss"].item(), rel=1e-6)
    # VQA gradients reach the shared encoders, and only the VQA loss reaches the answer decoder
    losses["vqa_loss"].backward()
    assert pair.captioner.vision.patch_embed.proj.weight.grad.abs().sum() > 0
    assert pair.captioner.text_encoder.transformer.blocks[0].cross_attn.q.weight.grad.abs().sum() > 0
    assert pair.captioner.text_decoder.transformer.blocks[0].attn.qkv.weight.grad is None
    half = BLIPVQATask(vqa_weight=0.5).losses(pair, batch)["vqa_loss"]
    assert half.item() == pytest.approx(0.5 * losses["vqa_loss"].item(), rel=1e-6)


def test_recipe_text_ids_and_saved_pair(tmp_path):
    recipe, pair, batch = make(n=2)
    tok = shapes_tokenizer()
    t = pair.captioner.config.text
    assert (t.vocab_size, t.bos_token_id, t.enc_token_id, t.sep_token_id, t.pad_token_id) == (50, 48, 49, 3, 0)
    assert text_ids(vlkit.get_tokenizer("bert-base-uncased")) == {
        "vocab_size": 30524,
        "bos_token_id": 30522,
        "enc_token_id": 30523,
        "sep_token_id": 102,
        "pad_token_id": 0,
    }
    folder = pair.save_pretrained(tmp_path / "model")
    cap, vqa = vlkit.from_pretrained(folder), vlkit.from_pretrained(folder / "vqa")
    assert vlkit.get_tokenizer(folder).get_vocab() == tok.get_vocab()
    assert vlkit.get_tokenizer(folder / "vqa").get_vocab() == tok.get_vocab()
    for k, v in pair.vqa.state_dict().items():
        assert torch.equal(vqa.state_dict()[k], v), k
    # a run resumed from the folder shares the encoders again
    again = BLIPVQARecipe({"pretrained": str(folder)}, tokenizer="shapes").build_model()
    assert again.vqa.vision is again.captioner.vision
    assert torch.equal(
        again.vqa.text_decoder.transformer.blocks[0].cross_attn.kv.weight,
        pair.vqa.text_decoder.transformer.blocks[0].cross_attn.kv.weight,
    )
    assert isinstance(again, CaptionerAndVQA) and cap.config == again.captioner.config
    with pytest.raises(ValueError, match="decoder_context='question'"):
        CaptionerAndVQA(cap, cap)


def test_recipe_rejects_data_without_questions():
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes")
    with pytest.raises(ValueError, match="question"):
        recipe.collate()([{"pixel_values": torch.zeros(3, 32, 32), "caption": "a red circle", "index": 0}])


@pytest.mark.parametrize("seed", [0, 1])
def test_the_pair_learns_to_answer_from_the_image(seed):
    """120 steps on 16 shapes (about 6 s on one core), each asked one of two fixed questions, so
    that only the image tells the answers apart: the VQA loss falls, greedy answers become right,
    and they are wrong when the images are swapped. Gradients are clipped as the training loop
    clips them; two seeds, so a run that only just learns on one CPU's kernels shows up here."""
    torch.manual_seed(seed)
    recipe = BLIPVQARecipe({"preset": "blip-tiny"}, tokenizer="shapes", init_std=0.1)
    pair = recipe.build_model()
    ds = ShapesDataset(size=16, seed=4, image_size=32, transform=recipe.transform(pair))
    items = []
    for i in range(16):
        a = ds.attributes(i)
        q, ans = ("what shape is in the picture?", a.shape) if i % 2 else ("what colour is the object?", a.colour)
        items.append({**ds[i], "question": q, "answer": ans})
    batch = recipe.collate()(items)
    opt = torch.optim.AdamW(pair.parameters(), lr=3e-3)
    pair.train()
    history = []
    for _ in range(120):
        losses = recipe.task.losses(pair, batch)
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(pair.parameters(), 1.0)
        opt.step()
        history.append(losses["vqa_loss"].item())
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:10]) / 10
    from vlkit.eval.vqa import answer_questions

    def right(pixels):
        answers = answer_questions(pair.vqa, recipe.tokenizer, pixels, batch["questions"], num_beams=1)
        return sum(a == b for a, b in zip(answers, batch["answers"]))

    assert right(batch["pixel_values"]) >= 12  # seeds 0-4 (model and data): 13 to 16
    assert right(batch["pixel_values"].roll(2, dims=0)) <= 8  # each question about another image: 3 to 6


@pytest.mark.slow
def test_two_processes_train_the_pair_as_one(tmp_path):
    """`vlkit train` of the demo config under torchrun (2 CPU processes, gloo, batch 4 each) gives
    the ITC, LM and VQA losses of one process on the same global batch of 8 (ITM differs: each
    process samples its own hard negatives), and rank 0 saves both models (about 15 s)."""
    import json
    from pathlib import Path

    from vlkit.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "blip-shapes.yaml"
    common = [
        "train.max_steps=3",
        "train.log_every=1",
        "data.val_size=16",
        "data.train_size=256",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.progress=false",
        "data.num_workers=0",
        "eval.batch_size=16",
    ]
    proc = torchrun_train(
        ["--config", str(config), *as_flags(common + ["train.batch_size=4", f"train.output_dir={tmp_path / 'ddp'}"])]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = as_flags(common + ["train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"])
    assert main(["train", "--config", str(config), *one]) == 0

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r.get("split") == "train"]

    ddp, one = losses("ddp"), losses("one")
    assert len(ddp) == len(one) == 3
    for a, b in zip(ddp, one):
        for k in ("itc_loss", "lm_loss", "vqa_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-3), (k, a[k], b[k])
    assert (tmp_path / "ddp" / "model" / "vqa" / "model.safetensors").is_file()
