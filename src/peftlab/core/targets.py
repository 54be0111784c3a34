"""Which modules of a model an adapter attaches to.

A target specification is one of:

* ``"all-linear"``: every linear layer (``nn.Linear``, GPT-2's ``Conv1D``, peftlab's 4-bit
  linear) except the output head (``lm_head`` / ``classifier`` / ``score``);
* a single string other than that: a regular expression that must match the *whole* module path
  (Hugging Face PEFT's convention);
* a list of names, each matching a module path exactly, or as a dotted suffix (``"query"`` and
  ``".attention.self.query"`` both match ``bert.encoder.layer.0.attention.self.query``), or as a
  full-match regex when written ``"re:<pattern>"``.

`exclude` takes the same forms; `layers` keeps only modules inside the listed block indices.
Every name in a list must match something; otherwise the error lists what exists.

Matching is a pure query over the model as the user sees it: an adapter layer stands where the
module it wraps stood (under the same path), and the modules inside it (its `base_layer`, LoRA's
`lora_A` / `lora_B`, head copies) are never targets, so a second adapter selects exactly the
modules the first did. Only an exact full path reaches inside a wrapper (QLoRA quantizes a
wrapped layer's `...base_layer` that way).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.protocol import AdapterLayer
from peftlab.errors import TargetError

ALL_LINEAR = "all-linear"
# The modules Hugging Face sequence-classification models put their head in.
CLASSIFIER_HEAD_NAMES = ("classifier", "score")
_LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")

TargetSpec = str | Sequence[str]
_WRAPPER_SEGMENT = ".base_layer"


def file_path(path: str) -> str:
    """A module path as the base model knows it (wrappers' ``base_layer`` hops removed)."""
    return path.replace(_WRAPPER_SEGMENT, "")


def innermost(module: nn.Module) -> nn.Module:
    """The base module under any number of adapter wrappers."""
    while isinstance(module, AdapterLayer):
        module = module.base_layer
    return module


def visible_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Path -> module for every module except the model itself and those inside adapter layers."""
    modules = dict(model.named_modules())
    wrappers = [p for p, m in modules.items() if isinstance(m, AdapterLayer)]
    return {p: m for p, m in modules.items()
            if p and not any(p.startswith(w + ".") for w in wrappers)}


def is_linear(module: nn.Module) -> bool:
    """True for layers that compute ``x @ W.T + b``: nn.Linear, Conv1D, and quantized linears."""
    if isinstance(module, (nn.Linear, Conv1D)):
        return True
    return bool(getattr(module, "is_quantized_linear", False))


def linear_features(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like layer; Conv1D stores its weight as (in, out)."""
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def output_head_paths(model: nn.Module) -> set[str]:
    """Paths of the modules that produce the model's output (never adapted by ``all-linear``)."""
    paths = {name for name, _ in model.named_children() if name in CLASSIFIER_HEAD_NAMES}
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is not None:
        paths |= {name for name, module in model.named_modules() if module is head}
    return paths


def layer_index(path: str) -> int | None:
    """The transformer block index in a module path (``...layer.3.attention...`` -> 3)."""
    found = _LAYER_INDEX.findall(path)
    return int(found[-1]) if found else None


def _generic_name(path: str) -> str:
    """A module path without its block prefix, for listing candidates (``attention.self.query``)."""
    match = list(_LAYER_INDEX.finditer(path))
    return path[match[-1].end():] if match else path


def _matches(path: str, entry: str) -> bool:
    if entry.startswith("re:"):
        return re.fullmatch(entry[3:], path) is not None
    suffix = entry.lstrip(".")
    return path == suffix or path.endswith("." + suffix)


def named_by(path: str, spec: TargetSpec) -> bool:
    """True when `spec` (a full-match regex string, or a list of names) names module `path`."""
    if isinstance(spec, str):
        return re.fullmatch(spec, path) is not None
    return any(_matches(path, entry) for entry in spec)


def describe_candidates(paths: Iterable[str], limit: int = 40) -> str:
    names = sorted({_generic_name(p) for p in paths})
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def find_targets(
    model: nn.Module,
    targets: TargetSpec,
    *,
    accepts: Callable[[nn.Module], bool] = is_linear,
    exclude: TargetSpec | None = None,
    layers: Sequence[int] | None = None,
    method: str = "this method",
) -> list[str]:
    """Module paths of `model` selected by `targets`, in model order.

    `accepts` says which modules the method can wrap (default: linear layers); a named target
    it cannot wrap is an error that names the module's type.
    """
    modules = dict(model.named_modules())
    visible = visible_modules(model)
    candidates = [p for p, m in visible.items() if accepts(m)]

    if isinstance(targets, str) and targets == ALL_LINEAR:
        heads = output_head_paths(model)
        selected = [p for p in candidates if is_linear(innermost(visible[p]))
                    and not any(p == h or p.startswith(h + ".") for h in heads)]
    elif isinstance(targets, str):
        selected = [p for p in visible if re.fullmatch(targets, p)]
    else:
        entries = list(targets)
        if not entries:
            raise TargetError(f"{method}: target_modules is empty; name modules or use 'all-linear'")
        inside = [p for p in entries if p in modules and p not in visible]  # exact paths into a wrapper
        selected = [p for p in modules if p in inside or (p in visible and any(_matches(p, e) for e in entries))]
        unmatched = [e for e in entries if e not in inside and not any(_matches(p, e) for p in visible)]
        if unmatched:
            raise TargetError(
                f"{method}: target module(s) {', '.join(map(repr, unmatched))} not found in "
                f"{type(model).__name__}; candidates: {describe_candidates(candidates)}"
            )

    wrong_type = [p for p in selected if not accepts(modules[p])]
    if wrong_type and not isinstance(targets, str):
        kinds = sorted({type(modules[p]).__name__ for p in wrong_type})
        raise TargetError(
            f"{method} cannot wrap {', '.join(wrong_type[:3])} (type {', '.join(kinds)}); "
            f"candidates: {describe_candidates(candidates)}"
        )
    selected = [p for p in selected if accepts(modules[p])]

    if exclude is not None:
        selected = [p for p in selected if not named_by(p, exclude)]
    if layers is not None:
        wanted = set(layers)
        selected = [p for p in selected if layer_index(p) in wanted]

    if not selected:
        raise TargetError(
            f"{method}: no module matched target_modules={targets!r}"
            + (f", exclude={exclude!r}" if exclude is not None else "")
            + (f", layers={list(layers)!r}" if layers is not None else "")
            + f"; candidates: {describe_candidates(candidates)}"
        )
    return selected


def get_submodule_parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The parent module of `path` and the child's attribute name, for swapping modules."""
    parent_path, _, child = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), child


def replace_module(model: nn.Module, path: str, new_module: nn.Module) -> None:
    parent, child = get_submodule_parent(model, path)
    setattr(parent, child, new_module)
