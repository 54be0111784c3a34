"""Modules that train in full next to an adapter (e.g. a new classification head).

The original module is kept untouched as `base_layer`; every adapter name gets its own copy, so
switching or disabling adapters switches heads too, and the adapter file carries the copy under
the original module's keys (``classifier.weight``), as Hugging Face PEFT does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from peftlab.core.config import MethodConfig
from peftlab.core.protocol import AdapterLayer
from peftlab.errors import ConfigError


class ModulesToSave(AdapterLayer):
    """Wraps a module; the first active adapter that has a copy replaces it in the forward pass."""

    supports_row_selection = True

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.copies = nn.ModuleDict()

    def create_adapter(self, name: str, config: MethodConfig) -> None:
        module_copy = copy.deepcopy(self.base_layer)
        for param in module_copy.parameters():
            param.requires_grad_(True)
        self.copies[name] = module_copy

    def adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        return dict(self.copies[name].named_parameters())

    # The copy is used whether or not the adapter is "merged": there is no delta to fold.
    def merge(self, name: str, *, safe: bool = False) -> None:
        return None

    def unmerge(self, name: str) -> None:
        return None

    def remove_adapter_tensors(self, name: str) -> None:
        del self.copies[name]

    def selected(self) -> nn.Module:
        if not self.disabled:
            for name in self.active_adapters:
                if name in self.copies:
                    return self.copies[name]
        return self.base_layer

    def unload(self) -> nn.Module:
        return self.selected()

    def forward(self, *args: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.row_adapters is None:
            return self.selected()(*args, **kwargs)
        return self._forward_per_row(*args, **kwargs)

    def _forward_per_row(self, x: torch.Tensor, *args: torch.Tensor, **kwargs) -> torch.Tensor:
        """Each row through the copy of its first adapter that has one, else through the original.

        Rows are grouped by module, each group runs once on its rows, and the outputs go back
        to their rows (the leading dimension of `x` is the batch).
        """
        rows = self.row_adapters
        if len(rows) != x.shape[0]:
            raise ConfigError(f"adapter_names has {len(rows)} entries but the batch has {x.shape[0]} rows: "
                              "give one adapter name per row")
        owner = [next((n for n in names if n in self.copies), None) for names in rows]
        result = None
        for name in dict.fromkeys(owner):
            indices = torch.tensor([i for i, o in enumerate(owner) if o == name], device=x.device)
            module = self.base_layer if name is None else self.copies[name]
            output = module(x[indices], *args, **kwargs)
            if result is None:
                result = output.new_zeros((x.shape[0], *output.shape[1:]))
            result = result.index_copy(0, indices, output)
        return result
