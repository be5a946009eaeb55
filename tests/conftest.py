"""Test set-up shared by the whole suite.

PyPI's torchvision (pulled in by timm and open_clip, both test-only references) is a CUDA build
whose compiled operators do not load beside the CPU torch wheel; registering the two operator
schemas it looks up at import time lets its Python parts (transforms) import and run. Where its
operators do load (a torch/torchvision pair built together), registering them first would
clash, so the schemas are only defined for a CPU torch beside a CUDA torchvision.
vlkit itself never imports torchvision.
"""
import importlib.metadata
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402



def _torchvision_ops_load() -> bool:
    """Whether the installed torchvision's compiled operators match this torch build."""
    try:
        vision = importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return True  # nothing to patch
    # PyPI's torchvision (no "+cpu" label) is built for CUDA torch; the CPU wheel says "+cpu"
    return not ("+cpu" in torch.__version__ and "+cpu" not in vision)


if not _torchvision_ops_load():
    _tv = torch.library.Library("torchvision", "DEF")
    _tv.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _tv.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
