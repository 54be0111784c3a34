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
corrupt part is one error that names it and leaves the model as it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from peftlab import __version__
from peftlab.core.combination_config import CombinationConfig, Component, part_name
from peftlab.core.files import (
    CONFIG_NAME, WEIGHTS_NAME, _read_tensors, attach, fill_adapter, method_and_config_from_file, read_adapter_config,
    save_single,
)
from peftlab.core.model import PeftModel
from peftlab.errors import AdapterFileError, PeftlabError
from peftlab.io import write_json

MANIFEST_NAME = "peftlab_combination.json"
FORMAT = "peftlab-combination"


def is_combination_folder(folder: Path) -> bool:
    return (folder / MANIFEST_NAME).is_file()


def save_combination(peft_model: PeftModel, folder: str | Path, name: str) -> Path:
    """Write combination `name`: each component to `folder/<component>/`, then the manifest."""
    folder = Path(folder)
    config = peft_model.combinations[name]
    for component in config.components:
        save_single(peft_model, folder / component.name, part_name(name, component.name))
    write_json(folder / MANIFEST_NAME, {
        "format": FORMAT, "version": __version__, "method": config.method,
        "components": [{"name": c.name, "folder": c.name, "method": c.config.method, "lr_scale": c.lr_scale}
                       for c in config.components]})
    return folder


def _read_manifest(folder: Path) -> list[dict[str, Any]]:
    path = folder / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
        components = manifest["components"]
        if manifest.get("format") != FORMAT or not all({"name", "folder"} <= set(c) for c in components):
            raise KeyError("format, components[].name or components[].folder")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise AdapterFileError(f"{path} is not a valid combination manifest ({error}); re-save the combination") \
            from None
    return components


def _parts(folder: Path) -> list[tuple[dict[str, Any], Path]]:
    """The manifest's entries, each with its component folder (checked to hold both files)."""
    parts = []
    for entry in _read_manifest(folder):
        part_folder = folder / entry["folder"]
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
    for entry, part_folder in parts:
        _, config = method_and_config_from_file(read_adapter_config(part_folder))
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
