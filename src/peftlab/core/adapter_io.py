"""`save_adapter` / `load_adapter` / `read_config`: one adapter folder or a combination folder.

A single adapter is one Hugging Face PEFT folder (`core/files.py`); a combination is a folder of
such folders plus a manifest (`core/combination_files.py`). These three choose between the two,
so callers never need to know which they hold.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from peftlab.core.combination_config import CombinationConfig
from peftlab.core.combination_files import (
    is_combination_folder, load_combination, read_combination_config, save_combination,
)
from peftlab.core.config import MethodConfig
from peftlab.core.files import load_single, read_single_config, save_single
from peftlab.core.model import PeftModel


def save_adapter(peft_model: PeftModel, folder: str | Path, name: str = "default") -> Path:
    """Write adapter `name` to `folder` (created if needed); each file is written atomically.

    A combination is written as one unit: a subfolder per component plus a manifest."""
    if name in peft_model.combinations:
        return save_combination(peft_model, folder, name)
    return save_single(peft_model, folder, name)


def load_adapter(model: nn.Module, folder: str | Path, name: str = "default") -> PeftModel:
    """Attach the adapter saved in `folder` to `model` (a base model or a PeftModel) as `name`.

    A combination folder (with its manifest) restores every component, all active."""
    folder = Path(folder)
    if is_combination_folder(folder):
        return load_combination(model, folder, name)
    return load_single(model, folder, name)


def read_config(folder: str | Path) -> MethodConfig | CombinationConfig:
    """The config of the adapter saved in `folder` (a CombinationConfig for a combination folder),
    without reading its tensors: enough to load the base model the way its method wants it."""
    folder = Path(folder)
    if is_combination_folder(folder):
        return read_combination_config(folder)
    return read_single_config(folder)
