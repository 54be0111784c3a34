"""Per-request adapter selection: one forward pass, a different adapter for every row.

    peft_model(**batch, adapter_names=["a", "b", "__base__", "a"])     one name per row (B,)

    row 0 ── base + adapter a        a serving process holds one base model and many adapters,
    row 1 ── base + adapter b        and answers a mixed batch without switching adapters
    row 2 ── base alone
    row 3 ── base + adapter a

Each name is an adapter, a combination (all its parts) or "__base__" (no adapter). Every row gets
exactly what it would get alone with its adapters active, whatever is active now: layers whose
adapters no row names run as the base, layers that carry a named adapter compute it on its rows
only (`AdapterLayer.row_adapters`), and model hooks do not run.

Only layers that declare `supports_row_selection` can do this (LoRA, whose output is added per
row, and the per-adapter head copies of `modules_to_save`). Refused with one line each: adapters
with a model hook (a soft prompt or prefix changes the sequence of the whole batch), adapters that
train base-model parameters (shared by every row), layers that cannot split a batch (IA³ and
bottleneck adapters here), and any merged adapter (its change is in the weights of every row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from peftlab.errors import ConfigError

if TYPE_CHECKING:  # model.py imports this module
    from peftlab.core.model import PeftModel

BASE = "__base__"


def resolve_rows(peft_model: "PeftModel", adapter_names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Per row, the adapters it uses (a combination expanded to its parts, "__base__" to none)."""
    if isinstance(adapter_names, str) or not all(isinstance(n, str) for n in adapter_names):
        raise ConfigError("adapter_names must be a list of adapter names, one per row of the batch")
    known = [*peft_model.configs, *peft_model.combinations]
    unknown = sorted({n for n in adapter_names if n != BASE and n not in known})
    if unknown:
        raise ConfigError(f"adapter_names has unknown adapter(s) {unknown}: existing adapters are {known} "
                          f"(or {BASE!r} for the base model)")
    merged = peft_model.merged_adapters()
    if merged:
        raise ConfigError(f"adapters {merged} are merged into the weights: call unmerge() before selecting "
                          "adapters per request")
    rows = tuple(() if name == BASE else tuple(peft_model.parts(name)) for name in adapter_names)
    for name in sorted({n for names in rows for n in names}):
        _check_selectable(peft_model, name)
    return rows


def _check_selectable(peft_model: "PeftModel", name: str) -> None:
    method = peft_model.configs[name].method
    if name in peft_model.hooks:
        raise ConfigError(f"adapter {name!r} ({method}) cannot be selected per request: its hook changes the "
                          "inputs of the whole batch; use set_active instead")
    if peft_model.method(name).base_parameters_to_train(peft_model, name, peft_model.configs[name]):
        raise ConfigError(f"adapter {name!r} ({method}) cannot be selected per request: it trains base-model "
                          "parameters that every row shares; use set_active instead")
    for path, layer in peft_model.adapter_layers(name):
        if not layer.supports_row_selection:
            raise ConfigError(f"adapter {name!r} ({method}) cannot be selected per request: its "
                              f"{type(layer).__name__} at {path} computes one adapter for the whole batch")


@contextlib.contextmanager
def selected_rows(peft_model: "PeftModel", adapter_names: Sequence[str]) -> Iterator[None]:
    """Inside the block every adapter layer follows `adapter_names` row by row (see the module doc)."""
    rows = resolve_rows(peft_model, adapter_names)
    used = {n for names in rows for n in names}
    layers = [layer for _, layer in peft_model.adapter_layers()]
    disabled = [layer.disabled for layer in layers]
    for layer in layers:
        if used & set(layer.adapter_names):
            layer.row_adapters = rows
        else:
            layer.disabled = True
    try:
        yield
    finally:
        for layer, was_disabled in zip(layers, disabled):
            layer.row_adapters = None
            layer.disabled = was_disabled
