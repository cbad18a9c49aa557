"""Optional dependencies ("extras" in pyproject.toml): a feature that needs one says which
extra to install, in one line, instead of a ModuleNotFoundError from deep inside."""

from __future__ import annotations

import importlib
from types import ModuleType

from kumovideo.utils.errors import KumoInputError

# Import name -> the extra that installs it.
EXTRAS = {
    "cv2": "data",
    "scenedetect": "data",
    "ray": "ray",
    "torchao": "fp8",
    "starlette": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "librosa": "audio",
}


def missing_extra_message(module: str, feature: str) -> str:
    extra = EXTRAS[module.split(".")[0]]
    return f"{feature} needs the '{extra}' extra ({module} is not installed): pip install 'kumovideo[{extra}]'"


def require(module: str, feature: str) -> ModuleType:
    """Import `module` (a name in EXTRAS, or a submodule of one) for `feature` ("kumo data
    scan", "--fp8"), or raise a one-line KumoInputError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module.split(".")[0]:
            raise  # the extra is there; something it needs is not: let that error speak
        raise KumoInputError(missing_extra_message(module, feature)) from None
