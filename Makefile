# `make test` is the one command: it makes .venv when missing, installs vlkit with its test
# extra, and runs the whole suite. CI (.ci/run) calls exactly this.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on disk on our machines; an unpinned torch would pull a CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: test lint install bench clip-demo blip-demo clean

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider

# ruff (lint + format check) on everything, mypy on the typed core (layers, models, losses).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml tools/torchvision_schemas.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_PIN)"
	# Keep the torch that is there (ours or the user's CUDA build): pip then picks the torchvision
	# built for it (timm and open_clip want one) instead of upgrading torch to match the newest.
	$(PY) -m pip install -q -e ".[test,lint]" "torch==$$($(PY) -c 'import torch; print(torch.__version__.split("+")[0])')"
	# open_clip is a test-only reference; --no-deps keeps it from touching torch.
	$(PY) -m pip install -q --no-deps "open_clip_torch>=3.3"
	# PyPI's torchvision (pulled in by timm) is a CUDA build whose operators do not load beside the
	# CPU torch; a start-up hook in the venv defines the two schemas it needs, only in that case, so
	# transformers, open_clip and timm import in a plain .venv/bin/python too.
	$(PY) tools/torchvision_schemas.py --install
	# tests/test_search_browser.py drives a real browser: Debian's chromium (Playwright's own
	# browser download needs the open internet), installed here when missing (needs root or sudo).
	command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }
	touch $@

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_clip.py
	$(PY) benchmarks/bench_tokenizers.py
	$(PY) benchmarks/bench_blip2.py

# The main job: train a tiny CLIP on the built-in shapes data (2 CPU cores, a few minutes), then
# print zero-shot accuracy and retrieval Recall@1 and where the checkpoint and plots are.
clip-demo: $(VENV)/.installed
	$(VENV)/bin/vlkit train --config configs/clip-shapes.yaml --overwrite

# The second example: a tiny BLIP captioner and VQA model on the same built-in data, then
# captioning CIDEr/exact match, VQA accuracy and retrieval Recall@1 with and without ITM re-ranking.
blip-demo: $(VENV)/.installed
	$(VENV)/bin/vlkit train --config configs/blip-shapes.yaml --overwrite

# Image search (docs/search.md): the shapes' 1000 held-out images indexed with the CLIP demo's
# model (trained first when runs/clip-shapes has none), the precision of example queries, then
# the search page at http://127.0.0.1:8000/ (Ctrl-C stops it).
.PHONY: search-demo
search-demo: $(VENV)/.installed
	test -f runs/clip-shapes/model/config.json || $(VENV)/bin/vlkit train --config configs/clip-shapes.yaml --overwrite
	$(PY) -m vlkit.search.demo --model runs/clip-shapes --out runs/search-demo
	$(VENV)/bin/vlkit serve --index runs/search-demo/index --host 127.0.0.1 --port 8000

clean:
	rm -rf $(VENV) build *.egg-info

# A tiny LLaVA-style VLM on the same data (docs/vlm.md): the CLIP demo's image tower (runs/clip-shapes,
# trained first when missing) and a tiny Llama trained on the shapes' text (runs/lm-shapes, trained
# first when missing), both frozen; stage 1 trains the projector on captions, stage 2 the projector
# and LoRA adapters on conversations; answer accuracy per question type on held-out images, then
# `vlkit chat --model runs/vlm-stage2/model IMAGE`.
.PHONY: vlm-demo
vlm-demo: $(VENV)/.installed
	test -f runs/clip-shapes/model/config.json || $(VENV)/bin/vlkit train --config configs/clip-shapes.yaml --overwrite
	test -f runs/lm-shapes/model/config.json || $(VENV)/bin/vlkit train --config configs/lm-shapes.yaml --overwrite
	$(VENV)/bin/vlkit train --config configs/vlm-stage1.yaml --overwrite
	$(VENV)/bin/vlkit train --config configs/vlm-stage2.yaml --overwrite

# BLIP-2 on the same data (docs/blip2.md): the CLIP demo's image tower (runs/clip-shapes, trained
# first when missing) and the tiny Llama trained on the shapes' text alone (runs/lm-shapes, the VLM demo's, likewise)
# stay frozen while stage 1 and stage 2 train the Q-Former; then caption CIDEr-D and exact match,
# zero-shot VQA accuracy per question type, ITC Recall@1 and the frozen weights' sha256 check.
.PHONY: blip2-demo
blip2-demo: $(VENV)/.installed
	test -f runs/clip-shapes/model/config.json || $(VENV)/bin/vlkit train --config configs/clip-shapes.yaml --overwrite
	test -f runs/lm-shapes/model/config.json || $(VENV)/bin/vlkit train --config configs/lm-shapes.yaml --overwrite
	$(VENV)/bin/vlkit train --config configs/blip2-shapes-stage1.yaml --overwrite
	$(VENV)/bin/vlkit train --config configs/blip2-shapes-stage2.yaml --overwrite
