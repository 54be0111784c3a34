"""Full fine-tuning as a method: every base parameter trains (see `config.py` for why it is one).

Registering the baseline like any PEFT method lets every harness (training, files, comparison,
estimates) treat all methods the same way. Its adapter file holds every trained tensor.
"""

from __future__ import annotations

from torch import nn

from peftlab.core.protocol import Method
from peftlab.methods.full.config import DECLARATION, FullConfig


class Full(Method):
    declaration = DECLARATION

    def inject(self, model: nn.Module, name: str, config: FullConfig) -> list[str]:
        return []

    def base_parameters_to_train(self, peft_model: nn.Module, name: str,
                                 config: FullConfig) -> dict[str, nn.Parameter]:
        return peft_model.base_parameters()
