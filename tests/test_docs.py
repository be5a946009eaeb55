"""The code the README and docs/ show runs as written.

Every ```python block of README.md and docs/*.md runs on its own, in a fresh namespace, in an
empty temporary folder, offline. A block that cannot run offline in seconds (a hub download, a
full training run) carries a marker on the line right before it, which this test reports as a
skip with its reason:

    <!-- no-test: downloads Salesforce/blip-image-captioning-base from the hub -->
    ```python
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_TEST = re.compile(r"^<!--\s*no-test:\s*(?P<reason>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")


def python_blocks(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
    """(first line number, code, no-test reason or None) of each ```python block in `path`."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        if match["lang"] == "python":
            previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NO_TEST.match(previous)
            blocks.append((i + 1, "\n".join(lines[i + 1 : end]) + "\n", marker["reason"] if marker else None))
        i = end + 1
    return blocks


def _cases():
    for path in DOCS:
        for line, code, reason in python_blocks(path):
            name = f"{path.relative_to(ROOT)}:{line}"
            marks = [pytest.mark.skip(reason=f"no-test: {reason}")] if reason else []
            yield pytest.param(name, code, id=name, marks=marks)


def test_the_block_finder_sees_fences_and_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n```python\nx = 1\n```\n\n<!-- no-test: needs the hub -->\n\n```python\ny = 2\n```\n"
        "```bash\nls\n```\n```\nplain\n```\n",
        encoding="utf-8",
    )
    assert python_blocks(doc) == [(2, "x = 1\n", None), (8, "y = 2\n", "needs the hub")]


def test_every_doc_has_been_scanned():
    names = {path.name for path in DOCS}
    assert "README.md" in names and "tokenizers.md" in names and "metrics.md" in names
    assert sum(len(python_blocks(path)) for path in DOCS) >= 10


@pytest.mark.parametrize("name, code", list(_cases()))
def test_doc_block_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    namespace = {"__name__": "__doc_block__"}
    exec(compile(code, name, "exec"), namespace)


def test_transformers_open_clip_and_timm_import_in_a_plain_interpreter(tmp_path):
    """No conftest here: the venv's own start-up hook (make install) must make torchvision import."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    code = "import transformers; from transformers import CLIPModel; import open_clip, timm"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, (
        f"{code!r} fails in {sys.executable} (run `make install` to add tools/torchvision_schemas.py's hook):\n"
        + done.stderr[-2000:]
    )
