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
    adapter_entries, is_combination_folder, load_combination, read_combination_config, write_combination,
)
from peftlab.core.config import MethodConfig
from peftlab.core.files import load_single, read_single_config, write_single
from peftlab.core.model import PeftModel
from peftlab.io import replace_folder


def save_adapter(peft_model: PeftModel, folder: str | Path, name: str = "default") -> Path:
    """Write adapter `name` to `folder` (created if needed) as one unit: the adapter saved there
    before is replaced whole; other entries of the folder stay.

    A combination is written as a subfolder per component plus a manifest."""
    folder = Path(folder)
    owned = adapter_entries(folder)
    with replace_folder(folder, carry=lambda entry: entry.name not in owned) as temporary:
        write_adapter(peft_model, temporary, name)
    return folder


def write_adapter(peft_model: PeftModel, folder: Path, name: str) -> None:
    """Write adapter `name`'s files into the new folder `folder` (`save_adapter` swaps it into place)."""
    if name in peft_model.combinations:
        write_combination(peft_model, folder, name)
    else:
        write_single(peft_model, folder, name)


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
