"""Full fine-tuning as a method: every base parameter trains.

Registering the baseline like any PEFT method lets every harness (training, files, comparison,
estimates) treat all methods the same way. There is no separate delta: the learned change lives
in the base weights, so "merging" is a no-op, and the base model cannot be recovered by
disabling (`supports_disable=False`). Its adapter file holds every trained tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from peftlab.core.protocol import Capabilities, Method, MethodConfig
from peftlab.core.registry import register


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """Full fine-tuning has no hyperparameters of its own; the head trains as a base parameter."""

    method: ClassVar[str] = "full"
    modules_to_save: tuple[str, ...] | None = ()


@register
class Full(Method):
    name = "full"
    config_class = FullConfig
    capabilities = Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True,
                                supports_disable=False)

    def inject(self, model: nn.Module, name: str, config: FullConfig) -> list[str]:
        return []

    def base_parameters_to_train(self, peft_model: nn.Module, name: str,
                                 config: FullConfig) -> dict[str, nn.Parameter]:
        return peft_model.base_parameters()
