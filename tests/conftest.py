"""Test set-up shared by the whole suite.

PyPI's torchvision (pulled in by timm and open_clip, both test-only references) is a CUDA build
whose compiled operators do not load beside the CPU torch wheel; registering the two operator
schemas it looks up at import time lets its Python parts (transforms) import and run.
vlkit itself never imports torchvision.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

try:
    _tv = torch.library.Library("torchvision", "DEF")
    _tv.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _tv.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
except RuntimeError:  # a torchvision whose operators load registered them already
    pass

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
