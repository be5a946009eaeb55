"""The search page's JSON API (FastAPI TestClient): queries, uploads, safety of /images, updates."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from search_helpers import shape_images, tiny_clip
from vlkit.cli import main
from vlkit.search import Searcher
from vlkit.search.app import create_app


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    model = tiny_clip(root / "clip")
    images = root / "photos"
    shape_images(images, 12)
    (images / "secret.txt").write_text("not indexed")
    (root / "outside.png").write_bytes((images / "0001.png").read_bytes())
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--out", str(root / "idx"),
                 "--workers", "0"]) == 0  # fmt: skip
    return root, images


@pytest.fixture(scope="module")
def client(setup):
    root, _ = setup
    app = create_app(Searcher(root / "idx"), max_upload_bytes=200_000)
    return TestClient(app)


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


def test_text_search_api_matches_searcher(client, setup):
    root, _ = setup
    r = client.get("/api/search", params={"text": "a small red circle", "k": 5})
    assert r.status_code == 200
    results = r.json()["results"]
    expected = Searcher(root / "idx").search_text("a small red circle", 5)
    assert results == [h.to_dict() for h in expected] and len(results) == 5
    assert set(results[0]) == {"path", "score"}


def test_image_upload_finds_the_same_image_first(client, setup):
    _, images = setup
    r = client.post("/api/search", params={"k": 3}, files={"image": ("q.png", png_bytes(images / "0004.png"))})
    assert r.status_code == 200
    assert r.json()["results"][0]["path"] == "0004.png" and r.json()["results"][0]["score"] == pytest.approx(
        1, abs=1e-5
    )


def test_more_like_this_and_zero_shot(client, setup):
    _, images = setup
    r = client.get("/api/similar", params={"path": "sub/0003.png", "k": 4})
    assert r.status_code == 200 and len(r.json()["results"]) == 4
    assert "sub/0003.png" not in [h["path"] for h in r.json()["results"]]
    assert client.get("/api/similar", params={"path": "nope.png"}).status_code == 404
    r = client.post("/api/classify", data={"classes": "circle, square, star"},
                    files={"image": ("q.png", png_bytes(images / "0004.png"))})  # fmt: skip
    labels = r.json()["labels"]
    assert r.status_code == 200 and sorted(lab["label"] for lab in labels) == ["circle", "square", "star"]
    assert [lab["score"] for lab in labels] == sorted((lab["score"] for lab in labels), reverse=True)
    r = client.post("/api/classify", data={"classes": "circle"}, files={"image": ("q.png", b"x")})
    assert r.status_code == 400


def test_bad_uploads_get_4xx_and_the_server_lives_on(client, setup):
    _, images = setup
    r = client.post("/api/search", files={"image": ("notes.txt", b"hello, not an image")})
    assert r.status_code == 400 and "not a readable image" in r.json()["detail"]
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(big, "PNG")
    assert big.tell() > 200_000
    r = client.post("/api/search", files={"image": ("big.png", big.getvalue())})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert client.post("/api/search", files={"image": ("empty.png", b"")}).status_code == 400
    assert client.post("/api/search").status_code == 422  # no image field
    assert client.get("/api/search", params={"text": "   "}).status_code == 400
    assert client.get("/api/search", params={"text": "a", "k": 0}).status_code == 400
    assert client.get("/api/search", params={"text": "a circle"}).status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/images/secret.txt",  # in the folder, not in the index
        "/images/../outside.png",
        "/images/%2e%2e/outside.png",
        "/images/..%2foutside.png",
        "/images//etc/passwd",
        "/images/%2fetc%2fpasswd",
        "/thumbs/../outside.png",
    ],
)
def test_images_are_served_only_for_indexed_files(client, url):
    r = client.get(url)
    assert r.status_code in (403, 404), (url, r.status_code)
    assert b"not indexed" not in r.content


def test_images_and_cached_thumbnails(client, setup):
    root, images = setup
    r = client.get("/images/sub/0003.png")
    assert r.status_code == 200 and r.content == png_bytes(images / "sub" / "0003.png")
    r = client.get("/thumbs/0001.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert len(list((root / "idx" / "thumbs").glob("*.jpg"))) >= 1
    assert client.get("/").status_code == 200 and "vlkit search" in client.get("/").text
    assert client.get("/api/info").json()["images"] == 12


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    model = tiny_clip(tmp_path / "clip")
    images = tmp_path / "photos"
    shape_images(images, 3)
    secret = tmp_path / "private" / "me.png"
    secret.parent.mkdir()
    secret.write_bytes((images / "0001.png").read_bytes())
    os.symlink(secret, images / "link.png")
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "idx"),
                 "--workers", "0"]) == 0  # fmt: skip
    client = TestClient(create_app(Searcher(tmp_path / "idx")))
    assert client.get("/images/link.png").status_code == 403
    assert client.get("/images/0001.png").status_code == 200


def test_queries_during_an_update_use_the_previous_version_then_the_new(tmp_path):
    model = tiny_clip(tmp_path / "clip")
    images = tmp_path / "photos"
    shape_images(images, 6)
    index = tmp_path / "idx"
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--out", str(index),
                 "--workers", "0"]) == 0  # fmt: skip
    searcher = Searcher(index)
    client = TestClient(create_app(searcher))
    shape_images(images, 2, start=50)
    from vlkit.search import store

    real = store.write_index
    seen = []

    def slow_write(folder, data):  # a query arrives while the update writes its version
        seen.append(client.get("/api/info").json()["images"])
        return real(folder, data)

    store.write_index = slow_write
    try:
        import vlkit.search.build as build_module

        build_module.write_index = slow_write
        assert main(["index", "update", str(index), "--workers", "0"]) == 0
    finally:
        build_module.write_index = real
        store.write_index = real
    assert seen == [6]
    assert client.get("/api/info").json()["images"] == 8
    r = client.post("/api/search", params={"k": 1}, files={"image": ("q.png", (images / "0050.png").read_bytes())})
    assert r.json()["results"][0]["path"] == "0050.png"


def test_caption_and_question_about_a_result(setup):
    import torch

    import vlkit
    from vlkit.data.images import load_image
    from vlkit.eval.vqa import answer_questions
    from vlkit.search.assist import Assistant

    root, images = setup
    torch.manual_seed(0)
    captioner = vlkit.create_model("blip-tiny", text_encoder=False, retrieval_heads=False).eval()
    vqa = vlkit.create_model("blip-tiny", decoder_context="question", retrieval_heads=False).eval()
    tokenizer = vlkit.get_tokenizer("bert-base-uncased")
    assistant = Assistant(captioner, tokenizer, vqa)
    client = TestClient(create_app(Searcher(root / "idx"), assistant=assistant))
    assert client.get("/api/info").json()["questions"] is True
    r = client.get("/api/caption", params={"path": "0001.png"})
    assert r.status_code == 200 and r.json()["caption"] == assistant.caption(load_image(images / "0001.png"))
    r = client.post("/api/ask", data={"path": "0001.png", "question": "what colour is the shape?"})
    pixels = vlkit.image_transform(vqa)(load_image(images / "0001.png"))[None]
    assert r.status_code == 200
    assert r.json()["answer"] == answer_questions(vqa, tokenizer, pixels, ["what colour is the shape?"])[0]
    assert client.post("/api/ask", data={"path": "secret.txt", "question": "what?"}).status_code == 404
    plain = TestClient(create_app(Searcher(root / "idx")))
    assert plain.get("/api/caption", params={"path": "0001.png"}).status_code == 404
