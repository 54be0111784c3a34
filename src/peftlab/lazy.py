"""Package attributes that import their module on first use (PEP 562).

    __getattr__ = lazy_exports(__name__, {"PeftModel": "peftlab.core.model", ...})

so `import peftlab.estimate` (or `peftlab.quant.layout`, `peftlab.core.registry`) does not import
torch through a package `__init__` that only re-exports names.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: name -> the module that defines it (or the module
    itself when the name is its last part), imported on first access and then cached."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if module.__name__ == f"{package}.{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
