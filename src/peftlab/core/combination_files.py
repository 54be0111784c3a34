"""A combination of methods on disk: one folder, one Hugging Face PEFT adapter folder per component.

    lora+prompt/
      peftlab_combination.json     {"format": "peftlab-combination", "method": "lora+prompt",
                                    "components": [{"name": "lora", "folder": "lora", "method": "lora",
                                                    "lr_scale": 1.0}, ...]}
      lora/adapter_config.json, adapter_model.safetensors      (the head copy, if any, lives here:
      prompt/adapter_config.json, adapter_model.safetensors     the first component carries it)

Each subfolder is an ordinary adapter folder (`core/files.py`), so Hugging Face PEFT loads any
component on its own, as it does the extra adapters it saves in subfolders. The manifest keeps
what the subfolders cannot: which folders form the unit, their order and learning-rate scales.
`load_adapter` reads every component's files before it attaches anything, so a missing or
corrupt part is one error that names it and leaves the model as it was. The manifest is checked
before any folder it names is opened: component names and folders must be plain names whose
paths stay inside the combination folder (no `..`, no absolute path, no link out of it), and a
learning-rate scale a finite number > 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import nn

from peftlab import __version__
from peftlab.core.combination_config import CombinationConfig, Component, part_name
from peftlab.core.files import (
    CONFIG_NAME, WEIGHTS_NAME, _read_tensors, attach, fill_adapter, method_and_config_from_file, read_adapter_config,
    write_single,
)
from peftlab.core.model import PeftModel
from peftlab.errors import AdapterFileError, PeftlabError
from peftlab.io import PLAIN_NAME, child_path, write_json

MANIFEST_NAME = "peftlab_combination.json"
FORMAT = "peftlab-combination"


def is_combination_folder(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file()


def write_combination(peft_model: PeftModel, folder: Path, name: str) -> None:
    """Write combination `name` into the new folder `folder`: each component to
    `folder/<component>/`, then the manifest (`save_adapter` swaps the folder into place)."""
    config = peft_model.combinations[name]
    for component in config.components:
        write_single(peft_model, child_path(folder, component.name, "component name"),
                     part_name(name, component.name))
    write_json(folder / MANIFEST_NAME, {
        "format": FORMAT, "version": __version__, "method": config.method,
        "components": [{"name": c.name, "folder": c.name, "method": c.config.method, "lr_scale": c.lr_scale}
                       for c in config.components]})


def adapter_entries(folder: Path) -> set[str]:
    """The entries of `folder` that belong to the adapter saved there: its files and, for a
    combination, the component folders its manifest names (saving a new adapter replaces them)."""
    owned = {CONFIG_NAME, WEIGHTS_NAME, MANIFEST_NAME}
    try:
        components = json.loads((folder / MANIFEST_NAME).read_text())["components"]
        owned |= {c["folder"] for c in components if isinstance(c.get("folder"), str)
                  and PLAIN_NAME.fullmatch(c["folder"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no manifest, or one that names nothing usable
    return owned


def _invalid(path: Path, problem: str) -> AdapterFileError:
    return AdapterFileError(f"{path} is not a valid combination manifest: {problem}; re-save the combination")


def _read_manifest(folder: Path) -> list[dict[str, Any]]:
    """The manifest's component entries, each checked: plain `name` and `folder`, none repeated,
    `lr_scale` (if given) a finite number > 0."""
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise _invalid(path, f"it cannot be read as JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _invalid(path, f"its format must be {FORMAT!r}")
    components = manifest.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise _invalid(path, "components must be a list of objects with name and folder")
    for key in ("name", "folder"):
        values = [c.get(key) for c in components]
        for value in values:
            if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value):
                raise _invalid(path, f"component {key} {value!r} must be a plain name (letters, digits, '_' and "
                                     "'-') of a folder inside the combination folder")
        if len(set(values)) != len(values):
            raise _invalid(path, f"component {key}s {values} repeat")
    for entry in components:
        scale = entry.get("lr_scale", 1.0)
        if not _positive_number(scale):
            raise _invalid(path, f"component {entry['name']!r} lr_scale must be a finite number > 0, got {scale!r}")
    return components


def _positive_number(value: Any) -> bool:
    try:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    except OverflowError:  # an integer beyond float range
        return False


def _parts(folder: Path) -> list[tuple[dict[str, Any], Path]]:
    """The manifest's entries, each with its component folder (inside `folder`, holding both files)."""
    parts = []
    for entry in _read_manifest(folder):
        try:
            part_folder = child_path(folder, entry["folder"], f"{folder / MANIFEST_NAME}: component folder")
        except PeftlabError as error:
            raise AdapterFileError(str(error)) from None
        for file in (part_folder / CONFIG_NAME, part_folder / WEIGHTS_NAME):
            if not file.resolve().is_relative_to(part_folder.resolve()):
                raise AdapterFileError(f"{file} is a link that leads out of {folder} (to {file.resolve()}): "
                                       "copy the file into the folder instead of linking it")
        if not (part_folder / CONFIG_NAME).is_file() or not (part_folder / WEIGHTS_NAME).is_file():
            raise AdapterFileError(f"combination {folder}: component {entry['name']!r} is missing "
                                   f"({part_folder} needs {CONFIG_NAME} and {WEIGHTS_NAME}); re-save the combination")
        parts.append((entry, part_folder))
    if len(parts) < 2:
        raise AdapterFileError(f"{folder / MANIFEST_NAME} lists {len(parts)} component(s): "
                               "a combination has at least two; re-save it")
    return parts


def _combination_config(parts: list[tuple[dict[str, Any], Path]]) -> CombinationConfig:
    components = []
    for index, (entry, part_folder) in enumerate(parts):
        _, config = method_and_config_from_file(read_adapter_config(part_folder))
        if index > 0 and config.modules_to_save:  # its head copy would land in the base model
            raise AdapterFileError(f"combination {part_folder.parent}: component {entry['name']!r} holds the head "
                                   "copy (modules_to_save), which the first component carries: list it first in "
                                   f"{MANIFEST_NAME}")
        components.append(Component(entry["name"], config, float(entry.get("lr_scale", 1.0))))
    return CombinationConfig(tuple(components), modules_to_save=components[0].config.modules_to_save)


def read_combination_config(folder: Path) -> CombinationConfig:
    """The combination saved in `folder`, configs only (no tensors are read)."""
    return _combination_config(_parts(folder))


def load_combination(model: nn.Module, folder: Path, name: str) -> PeftModel:
    """Attach the combination saved in `folder` as `name`, every component active."""
    parts = _parts(folder)
    combination = _combination_config(parts)
    tensors = {entry["name"]: (_read_tensors(part_folder / WEIGHTS_NAME), part_folder / WEIGHTS_NAME)
               for entry, part_folder in parts}
    peft_model = model if isinstance(model, PeftModel) else PeftModel(model)
    attach(peft_model, name, combination, folder)
    try:
        for component in combination.components:
            found, source = tensors[component.name]
            fill_adapter(peft_model, part_name(name, component.name), found, source)
    except PeftlabError:
        peft_model.delete_adapter(name)
        raise
    return peft_model
