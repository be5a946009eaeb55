"""Test set-up shared by the whole suite.

The venv's start-up hook (tools/torchvision_schemas.py, installed by `make install`) lets PyPI's
CUDA torchvision (pulled in by timm and open_clip, test-only references) import beside the CPU
torch. A venv made before the hook existed gets the same fix here, from the same file.
vlkit itself never imports torchvision.
"""

import importlib.util
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch


def _torchvision_schemas():
    """The installed hook module, else the repository's copy of it."""
    try:
        import _vlkit_torchvision_schemas

        return _vlkit_torchvision_schemas
    except ImportError:
        path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "torchvision_schemas.py"
        spec = importlib.util.spec_from_file_location("_vlkit_torchvision_schemas_repo", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # keeps its Library (and so the schemas) alive
        spec.loader.exec_module(module)
        return module


_torchvision_schemas().register()

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def one_thread():
    """One torch thread for the test (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a
    module): tiny models run several times faster on one thread than on two when the cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
