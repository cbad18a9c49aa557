"""Package names that load their module on first use (PEP 562), so importing a package
(and `kumo --help`) does not pay for torch, diffusers or OpenCV before a name is used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, whose public names (`exports`: name ->
    the module defining it) are imported on first use. Nothing is stored in the package:
    a name that is also a submodule's (`kumovideo.data.pipeline.probe`) stays what the
    import system makes it."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(set(sys.modules[package].__dict__) | set(exports))

    return __getattr__, __dir__
