"""The search page in a real browser: headless Chromium (Debian's ``chromium``, which `make install`
installs when missing) driven by Playwright against `vlkit serve`'s app on 127.0.0.1.

It types a query and sees the thumbnails of the API's results, in order; uploads an image and
sees it found first; asks which of three classes an image shows; opens a result and asks for
more like it; and saves a screenshot."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
import uvicorn
from playwright import sync_api

from search_helpers import shape_images, tiny_clip
from vlkit.cli import main
from vlkit.search import Searcher
from vlkit.search.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """(base URL, searcher, image folder) of a server running in a thread."""
    model = tiny_clip(tmp_path / "clip")
    images = tmp_path / "photos"
    shape_images(images, 12)
    assert main(["index", "build", "--model", str(model), "--images", str(images), "--out", str(tmp_path / "idx"),
                 "--workers", "0"]) == 0  # fmt: skip
    searcher = Searcher(tmp_path / "idx")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(searcher), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", searcher, images
    server.should_exit = True
    thread.join(timeout=10)


def _paths(page) -> list[str]:
    return page.eval_on_selector_all(".hit", "els => els.map(e => e.dataset.path)")


def _thumbnails_loaded(page) -> bool:
    return page.eval_on_selector_all(".hit img", "els => els.every(i => i.complete && i.naturalWidth > 0)")


def test_search_page_in_chromium(served, tmp_path):
    base, searcher, images = served
    assert shutil.which(CHROMIUM), "Debian's chromium is missing: `make install` installs it (apt-get install chromium)"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.wait_for_function("document.getElementById('info').textContent.includes('12 images')")

        # a text query: the grid shows the API's results, in order, with their thumbnails
        page.fill("#query", "a large red circle")
        page.press("#query", "Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('results for')")
        expected = [h.path for h in searcher.search_text("a large red circle", 24)]
        assert _paths(page) == expected and len(expected) == 12
        page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete)")
        assert _thumbnails_loaded(page)
        title = page.get_attribute(".hit img", "title")
        assert expected[0] in title and "score" in title

        # search by an uploaded image: that image comes first
        page.set_input_files("#upload", str(images / "0004.png"))
        page.wait_for_function("document.getElementById('status').textContent.includes('the image 0004.png')")
        assert _paths(page)[0] == "0004.png"
        page.wait_for_function("[...document.querySelectorAll('.hit img')].every(i => i.complete)")
        assert _thumbnails_loaded(page)

        # drag and drop an image onto the drop zone
        page.evaluate(
            """async () => {
                const blob = await (await fetch("/images/0005.png")).blob();
                const data = new DataTransfer();
                data.items.add(new File([blob], "dropped.png", {type: "image/png"}));
                document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
            }"""
        )
        page.wait_for_function("document.getElementById('status').textContent.includes('the image dropped.png')")
        assert _paths(page)[0] == "0005.png"

        # zero-shot for the uploaded image
        page.fill("#classes", "circle, square, star")
        page.click("#zeroshot button")
        page.wait_for_selector("#labels .label")
        labels = page.eval_on_selector_all("#labels .label", "els => els.map(e => e.textContent.split(' ')[0])")
        assert sorted(labels) == ["circle", "square", "star"]
        page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

        # open a result at full size, then "more like this"
        page.click(".hit img")
        page.wait_for_function(
            "document.getElementById('full').complete && document.getElementById('full').naturalWidth > 0"
        )
        assert "0005.png" in page.text_content("#full-path")
        page.keyboard.press("Escape")
        page.click(".hit:nth-child(2) .more")
        second = [h.path for h in searcher.search_image(_image(images / "0005.png"), 2)][1]
        page.wait_for_function(f"document.getElementById('status').textContent.includes('like {second}')")
        assert _paths(page) == [h.path for h in searcher.similar(second, 24)]
        browser.close()
    assert not errors, errors
    assert (tmp_path / "search.png").stat().st_size > 10_000


def _image(path):
    from vlkit.data.images import load_image

    return load_image(path)
