"""The analytic prediction (`peftlab.estimate`) for each method of a comparison.

The estimator is given what the measurement ran: the model's own `config.json`, the method's
fields (those the estimator's method also has), the batch shape of the training step at which
the method's live tensor bytes peaked (batches are padded to their longest row, not to
max_length), float32 and the device. A method the estimator does not know, or a model family it cannot shape, gives an
estimate with an `error` and no numbers.

A combination "a+b" (fields {part: its fields, "lr_scales": ...}, see `compare/plan.py`) is
estimated as one method made of its parts (`Combined`): the trainable parameters are the sum of
the parts' (the classification head once: only the first part trains it, as in
`core/combination.py`), and the memory model sees the union of what the parts add to the frozen
base (their parameters, saved inputs, extra activations, virtual tokens, NF4 storage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.estimate import METHODS, Settings, estimate, model_shape
from peftlab.estimate.methods import Method

_PART = "/"  # breakdown keys of a combination: "<part>/<the part's own key>"


@dataclass(frozen=True)
class Combined(Method):
    """The estimator's view of a combination: every declaration is the parts' sum or union."""

    name: ClassVar[str] = "combination"
    parts: tuple[Method, ...] = ()

    def breakdown(self, shape, num_labels):
        return {f"{part.name}{_PART}{key}": count for part in self.parts
                for key, count in part.breakdown(shape, num_labels).items()}

    def trained_base(self, breakdown):
        return sum(part.trained_base({key.partition(_PART)[2]: count for key, count in breakdown.items()
                                      if key.partition(_PART)[0] == part.name}) for part in self.parts)

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
        return tuple(f"{part.name}: {note}" for part in self.parts for note in part.notes(shape))

    def to_dict(self):
        return {"method": "+".join(part.name for part in self.parts), "parts": [p.to_dict() for p in self.parts]}


def estimator_method(name: str, fields: dict[str, Any]) -> Method:
    """The estimator's method for `name` ("lora" or "lora+prompt") with the plan's `fields`."""
    if "+" in name:
        return Combined(tuple(estimator_method(part, fields.get(part, {})) for part in name.split("+")))
    known = METHODS.get(name)
    if known is None:
        raise KeyError(f"peftlab.estimate has no method {name!r}")
    return known(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()
                    if k in known.__dataclass_fields__})


def estimate_method(plan: ComparePlan, method: MethodPlan, model_folder: Path, *, num_labels: int | None,
                    batch_size: int, seq_len: int, device: str) -> dict[str, Any]:
    """The estimate for `method` at one training batch of `batch_size` rows × `seq_len` tokens
    (the comparison passes the shape of the method's own peak step)."""
    try:
        settings = Settings(batch_size=batch_size, seq_len=seq_len, precision="fp32",
                            num_labels=num_labels, device="cuda" if device.startswith("cuda") else "cpu")
        result = estimate(model_shape(model_folder), estimator_method(method.method, method.fields), settings)
    except Exception as error:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
        return {"error": f"{type(error).__name__}: {error}"}
    memory = result.memory.to_dict()
    return {"trainable_params": result.trainable_params, "total_params": result.total_params,
            "percent": result.percent, "file_bytes": result.file_bytes["float32"],
            "memory_mb": {k: memory[k] / 2**20 for k in ("weights", "gradients", "optimizer", "activations", "total")},
            "settings": {"batch_size": settings.batch_size, "seq_len": seq_len, "precision": "fp32",
                         "device": settings.device},
            "notes": list(result.notes), "error": None}
