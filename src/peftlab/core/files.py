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
A folder is written as one unit (assembled in a hidden sibling and swapped in, see
`peftlab.io.replace_folder`), so an interrupted save never leaves a mix of two adapters.
A combination of methods is saved as one folder of such folders (see `core/combination_files.py`).
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
from peftlab.core.model import PeftModel, file_path
from peftlab.core.modules_to_save import ModulesToSave
from peftlab.core.protocol import MethodConfig
from peftlab.core.registry import get_method, method_for_hf_peft_type
from peftlab.errors import AdapterFileError, PeftlabError
from peftlab.io import note_casts, replace_folder, tensor_problem, write_json, write_safetensors

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MODULE_PREFIX = "base_model.model."

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


def adapter_file_config(peft_model: PeftModel, name: str) -> dict[str, Any]:
    config = peft_model.configs[name]
    method = peft_model.method(name)
    saved_modules = sorted({file_path(path) for path, layer in peft_model.adapter_layers(name)
                            if isinstance(layer, ModulesToSave)})
    base = peft_model.model
    # Methods that peft_type alone does not identify (none, or another method's format) carry a
    # block of our own, which takes precedence on loading; other HF-typed files stay free of
    # extra keys (HF PEFT warns on keys it does not know).
    own_block = {} if method.hf_peft_type and method.reads_plain_hf_files else {
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


def save_adapter(peft_model: PeftModel, folder: str | Path, name: str = "default") -> Path:
    """Write adapter `name` to `folder` (created if needed) as one unit: the adapter saved there
    before is replaced whole; other entries of the folder stay.

    A combination is written as a subfolder per component plus a manifest."""
    from peftlab.core.combination_files import adapter_entries  # it imports this module

    folder = Path(folder)
    owned = adapter_entries(folder)
    with replace_folder(folder, carry=lambda entry: entry.name not in owned) as temporary:
        write_adapter(peft_model, temporary, name)
    return folder


def write_adapter(peft_model: PeftModel, folder: Path, name: str) -> None:
    """Write adapter `name`'s files into the new folder `folder` (`save_adapter` swaps it into place)."""
    if name in peft_model.combinations:
        from peftlab.core.combination_files import write_combination  # it imports this module

        write_combination(peft_model, folder, name)
        return
    if name not in peft_model.configs:
        raise PeftlabError(f"unknown adapter {name!r}: existing adapters are {list(peft_model.configs)}")
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / WEIGHTS_NAME, adapter_state(peft_model, name), metadata={"format": "pt"})
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
    method = get_method(peftlab_block["method"]) if "method" in peftlab_block \
        else method_for_hf_peft_type(fields["peft_type"])
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
    embedding's full weight); any other base weight in a file is an unexpected key, never loaded."""
    base = peft_model.base_parameters()
    wrapped = {file_path(path) for path, _ in peft_model.adapter_layers(name)}
    extras = {}
    for key, tensor in found.items():
        path = file_path(key[len(root):]) if key.startswith(root) else None
        if key not in expected and path in base and path.rpartition(".")[0] in wrapped \
                and base[path].shape == tensor.shape:
            extras[key] = base[path]
    return extras


def read_config(folder: str | Path) -> MethodConfig:
    """The config of the adapter saved in `folder` (a CombinationConfig for a combination folder),
    without reading its tensors: enough to load the base model the way its method wants it."""
    from peftlab.core.combination_files import is_combination_folder, read_combination_config

    folder = Path(folder)
    if is_combination_folder(folder):
        return read_combination_config(folder)
    return method_and_config_from_file(read_adapter_config(folder))[1]


def load_adapter(model: nn.Module, folder: str | Path, name: str = "default") -> PeftModel:
    """Attach the adapter saved in `folder` to `model` (a base model or a PeftModel) as `name`.

    A combination folder (with its manifest) restores every component, all active."""
    from peftlab.core.combination_files import is_combination_folder, load_combination

    folder = Path(folder)
    if is_combination_folder(folder):
        return load_combination(model, folder, name)
    fields = read_adapter_config(folder)
    _, config = method_and_config_from_file(fields)
    found = _read_tensors(folder / WEIGHTS_NAME)
    peft_model = model if isinstance(model, PeftModel) else PeftModel(model)
    peft_model.add_adapter(name, config)
    try:
        fill_adapter(peft_model, name, found, folder / WEIGHTS_NAME)
    except PeftlabError:
        peft_model.delete_adapter(name)
        raise
    return peft_model


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
