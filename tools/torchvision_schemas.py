"""Let a CUDA build of torchvision import beside the CPU torch wheel (test-only references need it).

PyPI's torchvision (pulled in by timm and open_clip, test-only references for the parity claims)
is a CUDA build whose compiled operators fail to load beside the CPU torch wheel: importing it,
and with it transformers' CLIPModel, open_clip or timm, fails with
`operator torchvision::nms does not exist`. Defining the two operator schemas it looks up at
import time lets its Python parts (transforms) import and run. vlkit itself never imports
torchvision.

`make install` copies this file into the venv's site-packages as `_vlkit_torchvision_schemas.py`
with a `.pth` line that calls `install_hook()` at interpreter start-up:

    .venv/bin/python tools/torchvision_schemas.py --install

The hook costs nothing until something imports torchvision; then it compares the two builds and
defines the schemas only for a CPU torch (`+cpu`) beside a torchvision without `+cpu` (where the
operators do load, defining them first would clash). tests/conftest.py calls `register()` too,
for a venv made before this hook existed.
"""

from __future__ import annotations

import importlib.abc
import os
import sys

MODULE_NAME = "_vlkit_torchvision_schemas"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library.Library holding the schemas; kept alive for the process


def builds_mismatch() -> bool:
    """Whether torchvision is a CUDA build beside a CPU torch (its compiled operators cannot load)."""
    import importlib.metadata

    try:
        vision = importlib.metadata.version("torchvision")
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False  # nothing to patch
    return "+cpu" in torch_version and "+cpu" not in vision


def register() -> bool:
    """Define torchvision's nms/qnms schemas when the builds mismatch; idempotent. Returns whether defined."""
    global _library
    if _library is not None:
        return True
    if not builds_mismatch() or "torchvision" in sys.modules:
        return False
    import torch

    try:
        library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            library.define(schema)
    except RuntimeError:  # already defined (another copy of this module, or the real operators)
        return False
    _library = library
    return True


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Runs `register()` the first time `torchvision` is imported, then steps aside."""

    def find_spec(self, fullname, path=None, target=None):
        """Finds nothing (returns None), so the normal finders import every module."""
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            register()


def install_hook() -> None:
    """Called from the .pth line at start-up: cheap, imports nothing heavy."""
    if not any(isinstance(finder, _BeforeTorchvision) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BeforeTorchvision())


def _write(path: str, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder (never half-written)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-vlkit-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install(site_packages: str) -> None:
    """Copy this module into `site_packages` and add the .pth line that installs the hook."""
    with open(os.path.abspath(__file__)) as f:
        source = f.read()
    _write(os.path.join(site_packages, MODULE_NAME + ".py"), source)
    _write(os.path.join(site_packages, MODULE_NAME + ".pth"), f"import {MODULE_NAME}; {MODULE_NAME}.install_hook()\n")
    print(f"installed {MODULE_NAME} (.py + .pth) into {site_packages}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python tools/torchvision_schemas.py --install   (into this interpreter's site-packages)")
    import sysconfig

    install(sysconfig.get_paths()["purelib"])
