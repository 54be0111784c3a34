"""The peak of live tensor bytes during training, split the way `peftlab.estimate` splits memory.

A process's peak RSS is not what the estimator predicts: it also holds the Python + torch
runtime, the allocator's free-but-kept chunks, the model as it was loaded and the evaluation
passes. What the estimate predicts is the bytes of the tensors alive at the worst moment of a
training step. `TensorPeakTracker` measures exactly that, on any device, from inside PyTorch:

    tracker = TensorPeakTracker(model, optimizer)
    with tracker:                       # a TorchDispatchMode: sees every op's outputs
        ... a training step, ending with tracker.end_of_step(params) before zero_grad ...
    tracker.peak_bytes, tracker.split   # {"weights", "gradients", "optimizer", "activations"}

The tracker may be entered for some steps and not others (the training loop counts only the
steps that can set a new peak): storages it counted stay counted until they are freed, whenever
that happens, and each entry counts the model's and optimizer's storages it has not seen yet.

Bytes are counted per *storage* (views share their base's bytes), from the moment an op returns
it until the storage is freed (a weakref callback: PyTorch keeps a storage's Python object alive
as long as the storage, so the callback fires exactly when its memory is released). Storages
that exist before the tracker starts (the weights, buffers and any optimizer state) are counted
from the start.

The split is decided at the peak: the storages alive then that are parameters or buffers are
weights, those that are gradients of the trained parameters are gradients, those held by the
optimizer are its state, and everything else (autograd's saved tensors, the step's temporaries,
the batch) is activations. The gradients and optimizer state of a step are known only once it
has run, so the snapshot taken at the peak is classified at the end of that step.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

SPLIT = ("weights", "gradients", "optimizer", "activations")


def _storages(tensors: Iterable[torch.Tensor]) -> dict[int, int]:
    """{data_ptr: nbytes} of the distinct non-empty storages behind `tensors`."""
    found = {}
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            if storage.nbytes():
                found[storage.data_ptr()] = storage.nbytes()
    return found


def optimizer_tensors(optimizer: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    if optimizer is None:
        return []
    return [value for state in optimizer.state.values() for value in state.values()
            if isinstance(value, torch.Tensor)]


class TensorPeakTracker(TorchDispatchMode):
    """Live tensor bytes on `device_type` and their peak, with the peak's split (see module doc).

    `model` and `optimizer` name the storages that exist before tracking starts (and classify
    the peak); `device_type` is "cpu" or "cuda": storages elsewhere are not counted.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 device_type: str | None = None) -> None:
        super().__init__()
        self.model, self.optimizer = model, optimizer
        self.device_type = device_type or next(model.parameters()).device.type
        self.live: dict[int, int] = {}  # data_ptr -> nbytes of every storage counted now
        self.current = 0
        self.peak_bytes = 0
        self.split: dict[str, int] = dict.fromkeys(SPLIT, 0)
        self._at_peak = False
        self._snapshot: dict[int, int] | None = None  # live storages at the unclassified peak
        self.peak_shape: tuple[int, ...] | None = None  # the batch shape of the peak's step

    # --- counting ---------------------------------------------------------------------------
    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type != self.device_type:
            return
        storage = tensor.untyped_storage()
        size = storage.nbytes()
        if not size:
            return
        key = storage.data_ptr()
        known = self.live.get(key)
        if known is None:
            weakref.finalize(storage, self._free, key)
        elif known == size:
            return
        self.live[key] = size
        self.current += size - (known or 0)
        if self.current > self.peak_bytes:
            self.peak_bytes, self._at_peak, self._snapshot = self.current, True, None

    def _free(self, key: int) -> None:
        size = self.live.get(key)
        if size is None:
            return
        if self._at_peak:  # leaving the peak: remember what was alive there
            self._snapshot, self._at_peak = dict(self.live), False
        del self.live[key]
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._track(value)
        return out

    def __enter__(self):
        existing = [*self.model.parameters(), *self.model.buffers(), *optimizer_tensors(self.optimizer)]
        for tensor in existing:
            self._track(tensor)
        return super().__enter__()

    # --- classifying the peak ---------------------------------------------------------------
    def end_of_step(self, params: Iterable[nn.Parameter], shape: tuple[int, ...] | None = None) -> None:
        """Classify the peak if this step set it; call after the optimizer step, before zero_grad.

        `shape` is the step's (rows, tokens) batch shape, kept with the peak it set.
        """
        if self._at_peak:
            self._snapshot = dict(self.live)
        if self._snapshot is None:
            return
        params = list(params)
        weights = _storages([*self.model.parameters(), *self.model.buffers()])
        gradients = _storages(p.grad for p in params if p.grad is not None)
        optimizer = _storages(optimizer_tensors(self.optimizer))
        split = dict.fromkeys(SPLIT, 0)
        for key, size in self._snapshot.items():
            kind = ("weights" if key in weights else "gradients" if key in gradients
                    else "optimizer" if key in optimizer else "activations")
            split[kind] += size
        self.split, self._snapshot, self._at_peak, self.peak_shape = split, None, False, shape

    def to_dict(self) -> dict[str, Any]:
        """The peak and its split in MiB (2**20 bytes), with the peak step's batch shape."""
        return {"peak_mb": self.peak_bytes / 2**20, **{f"{k}_mb": v / 2**20 for k, v in self.split.items()},
                "batch_shape": list(self.peak_shape) if self.peak_shape else None}
