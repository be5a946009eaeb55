"""Errors a user can cause end in one line, ``vlkit CMD: error: ...``, exit code 2, no traceback
(checked through a real process where it matters); a genuine bug still raises."""

import errno
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vlkit
import vlkit.cli.output
from vlkit.cli import error_line, main

SRC = str(Path(vlkit.__file__).resolve().parents[1])


def _vlkit(*args: str, module: str = "vlkit") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _one_line(err: str, command: str) -> str:
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith(f"vlkit {command}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return vlkit.create_model("clip-tiny").save_pretrained(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
    return str(path)


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for f in folder.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def test_python_dash_m_vlkit_runs_the_cli():  # (python -m vlkit.cli: the bogus-device test)
    done = _vlkit("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: vlkit"), done.stderr


def test_damaged_weights_in_a_real_process(clip, tmp_path):
    truncated = _copy(clip, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    done = _vlkit("embed", "--model", str(truncated), "--text", "a cat", "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    line = _one_line(done.stderr, "embed")
    assert str(truncated) in line and "it may be truncated" in line


def test_a_bogus_device_in_a_real_process(clip, tmp_path):
    done = _vlkit("eval", "zeroshot", "--model", str(clip), "--size", "2", "--device", "tpu7", module="vlkit.cli")
    assert done.returncode == 2
    assert "unknown device 'tpu7'" in _one_line(done.stderr, "eval")


def test_empty_weights_and_a_refused_pickle(clip, tmp_path, capsys):
    empty = _copy(clip, tmp_path / "empty")
    (empty / "model.safetensors").write_bytes(b"")
    assert main(["eval", "retrieval", "--model", str(empty), "--size", "2"]) == 2
    assert "model.safetensors is empty" in _one_line(capsys.readouterr().err, "eval")
    pickled = _copy(clip, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    torch.save({"weights": print}, pickled / "pytorch_model.bin")  # a pickle that names a function
    assert main(["convert", str(pickled), "--to", "vlkit", str(tmp_path / "out")]) == 2
    assert "refused it (it calls print)" in _one_line(capsys.readouterr().err, "convert")
    assert not (tmp_path / "out").exists()


def test_cuda_on_a_machine_without_one(clip, photo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv in (
        ["embed", "--model", str(clip), "--text", "x", "--out", str(tmp_path / "o")],
        ["caption", "--model", str(clip), photo],
        ["eval", "zeroshot", "--model", str(clip), "--size", "2"],
    ):
        assert main([*argv, "--device", "cuda"]) == 2
        assert "no CUDA GPU" in _one_line(capsys.readouterr().err, argv[0])


def test_embed_needs_a_two_tower_model(tmp_path, photo, capsys):
    vit = vlkit.create_model("vit-tiny").save_pretrained(tmp_path / "vit")
    assert main(["embed", "--model", str(vit), "--images", photo, "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err, "embed")
    assert "holds a 'vit' model, which has no encode_image/encode_text" in line


def test_a_template_without_exactly_one_slot(clip, capsys):
    for template, found in (("a {} of a {}", "found 2"), ("a photo", "found 0")):
        assert main(["eval", "zeroshot", "--model", str(clip), "--size", "2", "--templates", template]) == 2
        line = _one_line(capsys.readouterr().err, "eval")
        assert f"prompt template {template!r}" in line and found in line


def test_a_decompression_bomb(tmp_path, clip, capsys):
    """A PNG whose header claims 30000 x 30000 pixels: refused before it is decoded."""
    path = tmp_path / "bomb.png"
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + width, height, depth, colour type, ...
    ihdr[4:12] = struct.pack(">II", 30000, 30000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(data))
    blip = vlkit.create_model("blip-tiny", text_encoder=False, retrieval_heads=False).save_pretrained(tmp_path / "b")
    assert main(["caption", "--model", str(blip), str(path)]) == 2
    assert "decompression bomb" in _one_line(capsys.readouterr().err, "caption").lower()


def test_a_full_disk_leaves_no_half_written_file(clip, photo, tmp_path, capsys, monkeypatch):
    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(vlkit.cli.output.os, "replace", full)
    out = tmp_path / "emb"
    assert main(["embed", "--model", str(clip), "--images", photo, "--out", str(out)]) == 2
    assert "No space left on device" in _one_line(capsys.readouterr().err, "embed")
    assert list(out.iterdir()) == []  # neither the .npy nor its temporary file


def test_error_lines_and_genuine_bugs(clip, monkeypatch):
    assert error_line(KeyError("no column 'x'")) == "no column 'x'"
    assert error_line(ValueError("first line\nsecond line")) == "first line"
    assert error_line(RuntimeError("\x1b[1mbold\x1b[0m")) == "RuntimeError: bold"
    monkeypatch.setattr(vlkit.cli.embed, "find_images", lambda paths: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug is not turned into a user error
        main(["embed", "--model", str(clip), "--text", "x", "--out", "unused"])


def test_embed_with_no_readable_image(clip, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"not a png")
    assert main(["embed", "--model", str(clip), "--images", str(tmp_path / "a.png"), "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err, "embed")
    assert "no image could be read" in line and "a.png" in line


def test_a_texts_file_that_is_not_utf8_is_named(clip, photo, tmp_path, capsys):
    texts = tmp_path / "captions.txt"
    texts.write_bytes("un caf\xe9\n".encode("latin-1"))
    code = main(
        ["embed", "--model", str(clip), "--images", photo, "--texts", str(texts), "--out", str(tmp_path / "out")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "captions.txt: not UTF-8 text" in _one_line(err, "embed"), err
    assert not (tmp_path / "out").exists()
