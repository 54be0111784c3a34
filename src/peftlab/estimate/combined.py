"""The footprint of a combination "a+b": every declaration is the parts' sum or union.

The trainable parameters are the sum of the parts' (the classification head once: only the first
part trains it, as in `core/combination.py`), and the memory model sees the union of what the
parts add to the frozen base (their parameters, saved inputs, extra activations, virtual tokens,
NF4 storage). Breakdown keys are "<part>/<the part's own key>".
"""

from __future__ import annotations

from dataclasses import dataclass

from peftlab.core.footprint import Footprint

_PART = "/"


@dataclass(frozen=True)
class Combined(Footprint):
    parts: tuple[Footprint, ...] = ()

    def _name(self, part: Footprint) -> str:
        return part.config.method

    def breakdown(self, shape, num_labels):
        return {f"{self._name(part)}{_PART}{key}": count for part in self.parts
                for key, count in part.breakdown(shape, num_labels).items()}

    def trained_base(self, breakdown):
        return sum(part.trained_base({key.partition(_PART)[2]: count for key, count in breakdown.items()
                                      if key.partition(_PART)[0] == self._name(part)}) for part in self.parts)

    def saved_inputs(self, shape):
        return tuple(dict.fromkeys(m for part in self.parts for m in part.saved_inputs(shape)))

    def extra_activations(self, shape):
        widths: dict[str, int] = {}
        for part in self.parts:
            for key, width in part.extra_activations(shape).items():
                widths[key] = widths.get(key, 0) + width
        return widths

    def trains_base(self):
        return any(part.trains_base() for part in self.parts)

    def frozen_weight_bytes(self, numel, bytes_per_param):
        # The smallest storage any part declares (QLoRA's NF4); the others keep the default.
        return min(part.frozen_weight_bytes(numel, bytes_per_param) for part in self.parts)

    def prompt_tokens(self):
        return sum(part.prompt_tokens() for part in self.parts)

    def prefix_tokens(self):
        return sum(part.prefix_tokens() for part in self.parts)

    def notes(self, shape):
        return tuple(f"{self._name(part)}: {note}" for part in self.parts for note in part.notes(shape))
