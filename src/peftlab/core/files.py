"""Adapter folders in the Hugging Face PEFT layout, so adapters move between tools.

    my-adapter/
      adapter_config.json         peft_type, task_type, method fields (r, lora_alpha, ...),
                                  modules_to_save, and, where peft_type does not name the
                                  method, a "peftlab" block (method, version, config)
      adapter_model.safetensors   base_model.model.<module path>.<key>  for module-level tensors
                                  <key>                                 for model-level tensors
                                                                        (e.g. prompt_embeddings)

Keys carry no adapter name, as Hugging Face PEFT writes them. Loading is strict: missing,
unexpected and shape-mismatched keys are reported together, by category, in one error, and
every tensor must be floating point and finite (a NaN adapter is refused, naming the tensor).
A combination of methods is saved as one folder of such folders (see `core/combination_files.py`);
`peftlab.save_adapter` / `load_adapter` choose between the two and write a folder as one unit
(assembled in a hidden sibling and swapped in, `core/adapter_io.py`), so an interrupted save
never leaves a mix of two adapters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from peftlab import __version__
from peftlab.core.config import MethodConfig
from peftlab.core.model import PeftModel
from peftlab.core.modules_to_save import ModulesToSave
from peftlab.core.registry import declaration, declaration_for_hf_file
from peftlab.core.targets import file_path
from peftlab.errors import AdapterFileError, PeftlabError, TargetError
from peftlab.io import note_casts, tensor_problem, write_json, write_safetensors

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

# Hugging Face PEFT task types by the suffix of the transformers model class.
_TASK_TYPES = (("ForSequenceClassification", "SEQ_CLS"), ("ForCausalLM", "CAUSAL_LM"),
               ("LMHeadModel", "CAUSAL_LM"), ("ForTokenClassification", "TOKEN_CLS"),
               ("ForQuestionAnswering", "QUESTION_ANS"))


def task_type(model: nn.Module) -> str | None:
    class_name = type(model).__name__
    return next((task for suffix, task in _TASK_TYPES if class_name.endswith(suffix)), None)


def adapter_state(peft_model: PeftModel, name: str) -> dict[str, torch.Tensor]:
    """Adapter `name` as file tensors: module-level keys prefixed, model-level keys bare."""
    root = peft_model.method(name).hf_module_prefix
    state = {}
    for path, layer in peft_model.adapter_layers(name):
        prefix = f"{root}{file_path(path)}."
        state.update({prefix + key: tensor for key, tensor in layer.file_state(name).items()})
    base_params = peft_model.method(name).base_parameters_to_train(peft_model, name, peft_model.configs[name])
    state.update({root + key: p.detach() for key, p in base_params.items()})
    if name in peft_model.hooks:
        state.update(peft_model.hooks[name].file_state())
    return state


def suffix_collateral(peft_model: PeftModel, name: str) -> dict[str, torch.Tensor]:
    """Base weights of modules Hugging Face PEFT would also copy for this file's modules_to_save.

    HF PEFT matches a modules_to_save entry as a plain string suffix, so "classifier" also wraps
    DistilBERT's `pre_classifier` and then expects its weights in the file. Writing them (unchanged
    base weights) lets HF load the file with the same logits; peftlab reads them back as base
    weights (see `_base_weights_in_file`), which leaves them as they are.
    """
    root = peft_model.method(name).hf_module_prefix
    return {f"{root}{file_path(path)}.{key}": p.detach()
            for path, module in _suffix_matches(peft_model, name).items() for key, p in module.named_parameters()}


def _suffix_matches(peft_model: PeftModel, name: str) -> dict[str, nn.Module]:
    """Module path -> module, for the modules HF PEFT wraps too because their path ends with one
    of adapter `name`'s modules_to_save entries (and lies outside them)."""
    saved = {file_path(path) for path, layer in peft_model.adapter_layers(name) if isinstance(layer, ModulesToSave)}
    return {path: module for path, module in peft_model.model.named_modules()
            if path and path not in saved and any(path.endswith(entry) for entry in saved)
            and not any(path.startswith(entry + ".") for entry in saved)}


def adapter_file_config(peft_model: PeftModel, name: str) -> dict[str, Any]:
    config = peft_model.configs[name]
    method = peft_model.method(name)
    saved_modules = sorted({file_path(path) for path, layer in peft_model.adapter_layers(name)
                            if isinstance(layer, ModulesToSave)})
    base = peft_model.model
    # Methods that peft_type alone does not identify (none, or another method's format) carry a
    # block of our own, which takes precedence on loading; other HF-typed files stay free of
    # extra keys (HF PEFT warns on keys it does not know).
    own_block = {} if method.hf_peft_type and method.declaration.reads_plain_hf_files else {
        "peftlab": {"method": method.name, "version": __version__, "config": config.to_dict()}}
    return {
        "peft_type": method.hf_peft_type or f"PEFTLAB_{method.name.upper()}",
        "task_type": task_type(base),
        "base_model_name_or_path": getattr(getattr(base, "config", None), "_name_or_path", None) or None,
        "inference_mode": True,
        **method.config_to_file(config),
        **(peft_model.hooks[name].file_config() if name in peft_model.hooks else {}),
        "modules_to_save": saved_modules or None,
        **own_block,
    }


def write_single(peft_model: PeftModel, folder: Path, name: str) -> None:
    """Write single adapter `name`'s files into the new folder `folder` (`adapter_io.save_adapter`
    swaps it into place)."""
    if name not in peft_model.configs:
        raise PeftlabError(f"unknown adapter {name!r}: existing adapters are {list(peft_model.configs)}")
    folder.mkdir(parents=True, exist_ok=True)
    state = {**suffix_collateral(peft_model, name), **adapter_state(peft_model, name)}
    write_safetensors(folder / WEIGHTS_NAME, state, metadata={"format": "pt"})
    write_json(folder / CONFIG_NAME, adapter_file_config(peft_model, name))


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise AdapterFileError(f"adapter folder {folder} does not exist: pass the folder written by "
                               "`peftlab train --out` or Hugging Face PEFT's save_pretrained")
    if not config_path.is_file():
        raise AdapterFileError(f"{config_path} is missing: an adapter folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        fields = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterFileError(f"{config_path} is not valid JSON ({error}); re-save the adapter") from None
    if not isinstance(fields, dict) or "peft_type" not in fields:
        raise AdapterFileError(f"{config_path} has no peft_type: it is not an adapter config")
    return fields


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The adapter tensors in `path`, each floating point and finite (else one AdapterFileError)."""
    if not path.is_file():
        raise AdapterFileError(f"{path} is missing: an adapter folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterFileError(f"{path} is corrupt or not a safetensors file ({error}); re-save the adapter") from None
    problem = tensor_problem(tensors)
    if problem:
        raise AdapterFileError(f"{path}: {problem}; the adapter cannot be used: retrain it or load another one")
    return tensors


def method_and_config_from_file(fields: dict[str, Any]):
    peftlab_block = fields.get("peftlab") or {}
    found = declaration(peftlab_block["method"]) if "method" in peftlab_block else declaration_for_hf_file(fields)
    method = found.load()()
    config = method.config_from_file(fields)
    saved = fields.get("modules_to_save")
    return method, config.replace(modules_to_save=tuple(saved) if saved else ())


def _check_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], source: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(f"{k} (file {tuple(found[k].shape)}, model {tuple(expected[k].shape)})"
                        for k in set(expected) & set(found) if found[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        parts = [f"{label} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("shape mismatch", mismatched)) if keys]
        raise AdapterFileError(f"{source} does not match this model ({'; '.join(parts)}): "
                               "load it on the base model it was trained on")


def _base_weights_in_file(peft_model: PeftModel, name: str, found: dict[str, torch.Tensor],
                          expected: dict[str, torch.Tensor], root: str) -> dict[str, nn.Parameter]:
    """File keys that are base-model weights of a module the adapter wraps (HF PEFT saves a targeted
    embedding's full weight) or of a module HF PEFT's suffix match wraps beside modules_to_save
    (`suffix_collateral`); any other base weight in a file is an unexpected key, never loaded."""
    base = peft_model.base_parameters()
    wrapped = {file_path(path) for path, _ in peft_model.adapter_layers(name)} \
        | {file_path(path) for path in _suffix_matches(peft_model, name)}
    extras = {}
    for key, tensor in found.items():
        path = file_path(key[len(root):]) if key.startswith(root) else None
        if key not in expected and path in base and path.rpartition(".")[0] in wrapped \
                and base[path].shape == tensor.shape:
            extras[key] = base[path]
    return extras


def read_single_config(folder: str | Path) -> MethodConfig:
    """The config of the single adapter saved in `folder`, without reading its tensors."""
    return method_and_config_from_file(read_adapter_config(folder))[1]


def load_single(model: nn.Module, folder: str | Path, name: str = "default") -> PeftModel:
    """Attach the single adapter saved in `folder` to `model` (a base model or a PeftModel) as `name`."""
    folder = Path(folder)
    fields = read_adapter_config(folder)
    _, config = method_and_config_from_file(fields)
    found = _read_tensors(folder / WEIGHTS_NAME)
    peft_model = model if isinstance(model, PeftModel) else PeftModel(model)
    attach(peft_model, name, config, folder)
    try:
        fill_adapter(peft_model, name, found, folder / WEIGHTS_NAME)
    except PeftlabError:
        peft_model.delete_adapter(name)
        raise
    return peft_model


def attach(peft_model: PeftModel, name: str, config, folder: Path) -> None:
    """`peft_model.add_adapter(name, config)` for a config read from `folder`: targets the model
    lacks mean the file belongs to another model, and are reported as such."""
    try:
        peft_model.add_adapter(name, config)
    except TargetError as error:
        raise AdapterFileError(f"{folder} does not match this model ({error}): "
                               "load it on the base model it was trained on") from None


def fill_adapter(peft_model: PeftModel, name: str, found: dict[str, torch.Tensor], source: Path) -> None:
    """Copy the file tensors `found` (read from `source`) into the attached adapter `name`, strictly."""
    expected = adapter_state(peft_model, name)
    root = peft_model.method(name).hf_module_prefix
    base_extras = _base_weights_in_file(peft_model, name, found, expected, root)
    _check_keys(expected, {k: v for k, v in found.items() if k not in base_extras}, source)
    note_casts(source, {k: (found[k].dtype, v.dtype) for k, v in (expected | base_extras).items()})
    with torch.no_grad():
        for key, param in base_extras.items():
            param.copy_(found[key].to(param.dtype))
    for path, layer in peft_model.adapter_layers(name):
        prefix = f"{root}{file_path(path)}."
        layer.load_file_state(name, {key: found[prefix + key] for key in layer.file_state(name)})
    base_params = peft_model.method(name).base_parameters_to_train(peft_model, name, peft_model.configs[name])
    with torch.no_grad():
        for key, param in base_params.items():
            param.copy_(found[root + key].to(param.dtype))
    if name in peft_model.hooks:
        peft_model.hooks[name].load_file_state({k: v for k, v in found.items() if not k.startswith(root)})
