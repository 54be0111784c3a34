"""The analytic prediction (`peftlab.estimate`) for each method of a comparison.

The estimator is given what the measurement ran: the model's own `config.json`, the method's
config as the worker builds it from the plan's fields (a combination "a+b" too: the estimator
counts its parts together, the head once), the batch shape of the training step at which the
method's live tensor bytes peaked (batches are padded to their longest row, not to max_length),
float32 and the device. A model family the estimator cannot shape gives an estimate with an
`error` and no numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.core.combination_config import make_config
from peftlab.estimate import Settings, estimate, model_shape


def estimate_method(plan: ComparePlan, method: MethodPlan, model_folder: Path, *, num_labels: int | None,
                    batch_size: int, seq_len: int, device: str) -> dict[str, Any]:
    """The estimate for `method` at one training batch of `batch_size` rows × `seq_len` tokens
    (the comparison passes the shape of the method's own peak step)."""
    try:
        settings = Settings(batch_size=batch_size, seq_len=seq_len, precision="fp32",
                            num_labels=num_labels, device="cuda" if device.startswith("cuda") else "cpu")
        result = estimate(model_shape(model_folder), make_config(method.method, **method.fields), settings)
    except Exception as error:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
        return {"error": f"{type(error).__name__}: {error}"}
    memory = result.memory.to_dict()
    return {"trainable_params": result.trainable_params, "total_params": result.total_params,
            "percent": result.percent, "file_bytes": result.file_bytes["float32"],
            "memory_mb": {k: memory[k] / 2**20 for k in ("weights", "gradients", "optimizer", "activations", "total")},
            "settings": {"batch_size": settings.batch_size, "seq_len": seq_len, "precision": "fp32",
                         "device": settings.device},
            "notes": list(result.notes), "error": None}
