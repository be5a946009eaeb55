"""Every ``--model`` takes the same things (vlkit.eval.load_model): a run folder, its model folder,
a training checkpoint (.pt). One tiny blip-vqa run (one step) serves `vlkit caption`, `vlkit
vqa`, `vlkit embed`, `vlkit eval` and `vlkit convert`."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlkit
from vlkit.cli import main
from vlkit.eval import load_model, load_tokenizer, model_source

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "blip-shapes.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("blip") / "run"
    threads = torch.get_num_threads()
    assert (
        main(
            [
                "train",
                "--config",
                str(CONFIG),
                "--train.max_steps",
                "1",
                "--train.batch_size",
                "4",
                "--data.train_size",
                "8",
                "--data.val_size",
                "4",
                "--data.num_workers",
                "0",
                "--eval.batch_size",
                "4",
                "--train.progress",
                "false",
                "--train.plots",
                "false",
                "--train.output_dir",
                str(out),
            ]
        )
        == 0
    )
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return str(path)


def _out(capsys) -> str:
    return capsys.readouterr().out.strip()


def test_the_three_forms_resolve_to_the_same_weights(run):
    ckpt = next((run / "checkpoints").glob("step-*.pt"))
    assert model_source(run) == run / "model"
    assert model_source(ckpt) == ckpt
    from_run, from_ckpt = load_model(run), load_model(ckpt)
    assert type(from_run).__name__ == "Blip" and hasattr(from_ckpt, "vqa")  # the folder's captioner; the pair
    for key, value in from_run.state_dict().items():
        assert torch.equal(value, from_ckpt.captioner.state_dict()[key]), key
    # the tokenizer: the one saved with the model, and the checkpoint recipe's (the shapes' 47 tokens)
    assert load_tokenizer(run, from_run).vocab_size == load_tokenizer(ckpt, from_ckpt).vocab_size < 100


def test_caption_and_vqa_read_a_run_folder(run, photo, capsys):
    ckpt = str(next((run / "checkpoints").glob("step-*.pt")))
    captions = []
    for source in (str(run), str(run / "model"), ckpt):
        assert (
            main(["caption", "--model", source, photo, "--num-beams", "1", "--max-new-tokens", "4", "--device", "cpu"])
            == 0
        )
        captions.append(_out(capsys))
    assert captions[0].startswith(photo + "\t") and captions[0] == captions[1] == captions[2]
    answers = []
    for source in (str(run), str(run / "model" / "vqa"), ckpt):  # the run's VQA model, however named
        assert main(["vqa", "--model", source, photo, "what shape is it?", "--num-beams", "1", "--device", "cpu"]) == 0
        answers.append(_out(capsys))
    assert answers[0] == answers[1] == answers[2]


def test_embed_and_convert_read_a_run_folder(run, photo, tmp_path, capsys):
    assert (
        main(
            ["embed", "--model", str(run), "--images", photo, "--text", "a red square", "--out", str(tmp_path / "emb")]
        )
        == 0
    )
    dim = vlkit.from_pretrained(run / "model").config.embed_dim
    assert np.load(tmp_path / "emb" / "image_embeddings.npy").shape == (1, dim)
    assert np.load(tmp_path / "emb" / "text_embeddings.npy").shape == (1, dim)
    assert main(["convert", str(run), "--to", "vlkit", str(tmp_path / "out")]) == 0
    back, original = vlkit.from_pretrained(tmp_path / "out"), vlkit.from_pretrained(run / "model")
    for key, value in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    assert (tmp_path / "out" / "vocab.txt").is_file()  # the run's tokenizer travels with it


def test_eval_reads_a_blip_training_checkpoint(run, tmp_path, capsys):
    ckpt = str(next((run / "checkpoints").glob("step-*.pt")))
    assert main(["eval", "vqa", "--model", ckpt, "--size", "4", "--num-beams", "1", "--batch-size", "4"]) == 0
    assert "questions" in _out(capsys)
    assert main(["eval", "captioning", "--model", ckpt, "--size", "4", "--num-beams", "1", "--show", "0"]) == 0
    assert "cider" in _out(capsys)


def test_an_empty_folder_is_neither_model_nor_run(tmp_path, capsys):
    assert main(["embed", "--model", str(tmp_path), "--text", "x", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is neither a model folder (config.json) nor a run folder" in err and err.count("\n") == 1


def test_tokenizer_defaults_by_family(tmp_path):
    for preset, vocab in (("clip-tiny", 49408), ("albef-tiny", 30522)):
        folder = vlkit.create_model(preset).save_pretrained(tmp_path / preset)  # no tokenizer files in it
        model = load_model(folder)
        assert load_tokenizer(folder, model).vocab_size == vocab, preset
        assert load_tokenizer(folder, model, "shapes").vocab_size < 100  # a named one wins


def test_a_checkpoint_newer_than_the_final_model_wins(run, tmp_path):
    """A run resumed past its end and stopped again: its newest checkpoint, not the older model/."""
    from vlkit.train.checkpoint import atomic_save, load_checkpoint

    copy = tmp_path / "run"
    (copy / "model").mkdir(parents=True)
    for f in (run / "model").iterdir():
        if f.is_file():
            (copy / "model" / f.name).write_bytes(f.read_bytes())
    assert model_source(copy) == copy / "model"
    state = load_checkpoint(next((run / "checkpoints").glob("step-*.pt")))
    key = next(
        k
        for k in state["model"]
        if k.startswith("captioner.")
        and k.endswith("weight")
        and "vqa." + k.removeprefix("captioner.") not in state["model"]
    )  # not shared with the VQA model
    state["model"][key] = state["model"][key] + 1.0
    later = atomic_save(state, copy / "checkpoints" / "step-0000002.pt")
    assert model_source(copy) == later
    assert torch.equal(load_model(copy).state_dict()[key], state["model"][key])


def test_a_checkpoint_whose_weights_do_not_fit(run, tmp_path, capsys):
    from vlkit.train.checkpoint import atomic_save, load_checkpoint

    state = load_checkpoint(next((run / "checkpoints").glob("step-*.pt")))
    state["model"].pop(next(iter(state["model"])))
    bad = atomic_save(state, tmp_path / "step-0000001.pt")
    assert main(["caption", "--model", str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its weights do not fit the model its config builds" in err
