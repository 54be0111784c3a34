"""What a checkpoint must show before a run continues from it: its files are the ones written, and
what they hold fits this run.

    complete.json    {"step": 12, "files": {"state.json": {"size": 5123, "sha256": "9f2c..."}, ...}}

`files_problem` compares every file with its recorded size and sha256: a flipped byte, a file
garbled at the same size or one cut short is caught before anything is read (`find_checkpoint`
then takes the previous checkpoint). A checkpoint that passes has the bytes its writer wrote, but
a hand-edited folder can pass too (its checksums rewritten), so what is read is checked as well,
before the model, optimizer or generators change:

- state.json against `STATE` (types, ranges, finite numbers; the first bad field is named);
- tensors: trainable and optimizer tensors floating point and finite, each named if not;
  generator states uint8 tensors that a scratch generator accepts;
- the optimizer's and the scheduler's saved state must have the structure this run's own has
  (same parameter groups, the per-parameter state an optimizer step of this type creates).

Every failure is one `CheckpointError` naming the file and the field or tensor.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import random
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from peftlab.errors import PeftlabError
from peftlab.io import tensor_problem


class CheckpointError(PeftlabError):
    """A checkpoint is missing, incomplete, damaged, or does not belong to this run."""


# --- file contents ------------------------------------------------------------------------------
def file_record(path: Path) -> dict[str, Any]:
    """{"size": bytes, "sha256": hex digest} of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def recorded_files(marker: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The `files` of a complete.json, each {"size": int, "sha256": str} (ValueError otherwise)."""
    files = marker["files"]
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and _is_int(entry.get("size")) and isinstance(entry.get("sha256"), str)
            for entry in files.values()):
        raise ValueError("complete.json files must map names to {size, sha256}")
    return files


def files_problem(folder: Path, marker: dict[str, Any]) -> str | None:
    """Why the files of checkpoint `folder` differ from its complete.json `marker`, or None."""
    try:
        files = recorded_files(marker)
    except (KeyError, TypeError, ValueError):
        return "its complete.json does not list the files' sizes and sha256"
    for name, expected in files.items():
        path = folder / name
        if "/" in name or not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['size']} were written"
        if file_record(path)["sha256"] != expected["sha256"]:
            return f"{name} differs from what was written (sha256)"
    return None


def read_tensors(path: Path, *, weights: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file; with `weights` each must be floating point and finite."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read ({error}): resume from another checkpoint") from None
    problem = tensor_problem(tensors) if weights else None
    if problem:
        raise CheckpointError(f"{path}: {problem}; this checkpoint cannot be resumed: resume from an earlier one "
                              "or start a new run")
    return tensors


# --- state.json ----------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    try:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    except OverflowError:
        return False


class Kind:
    """A leaf of a JSON schema: a description and the test a value must pass."""

    def __init__(self, description: str, test) -> None:
        self.description, self.test = description, test


NATURAL = Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
POSITIVE = Kind("an integer >= 1", lambda v: _is_int(v) and v >= 1)
FINITE = Kind("a finite number", _is_finite)
TEXT = Kind("a string", lambda v: isinstance(v, str))
OBJECT = Kind("an object", lambda v: isinstance(v, dict))
LIST = Kind("a list", lambda v: isinstance(v, list))
OPTIMIZER_VALUE = Kind('a finite number or {"tensor": name}', lambda v: _is_finite(v) or (
    isinstance(v, dict) and set(v) == {"tensor"} and isinstance(v["tensor"], str)))


def list_of(item: Any) -> tuple[str, Any]:
    return ("list", item)


def map_of(value: Any) -> tuple[str, Any]:
    return ("map", value)


# The fields every state.json must have (more may follow); nested dicts are objects with these keys.
STATE = {
    "format_version": NATURAL, "step": NATURAL, "epoch": NATURAL, "batch_in_epoch": NATURAL,
    "progress": {"history": list_of({"step": POSITIVE, "loss": FINITE}),
                 "evaluations": list_of({"step": POSITIVE, "dev": OBJECT}),
                 "examples_seen": NATURAL,
                 "window": {"loss": FINITE, "steps": NATURAL, "examples": NATURAL}},
    "optimizer": {"state": map_of(map_of(OPTIMIZER_VALUE)), "param_groups": list_of(OBJECT)},
    "scheduler": OBJECT,
    "rng": list_of({"python": LIST}),
    "world_size": POSITIVE, "train_config": OBJECT, "adapters": map_of(OBJECT), "train_examples_sha256": TEXT,
}


def check_schema(value: Any, schema: Any, where: str) -> None:
    """Raise ValueError naming the first place (`where.key[i]`) where `value` does not fit `schema`."""
    if isinstance(schema, Kind):
        if not schema.test(value):
            raise ValueError(f"{where} must be {schema.description}, got {_short(value)}")
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be an object, got {_short(value)}")
        for key, inner in schema.items():
            if key not in value:
                raise ValueError(f"{where}.{key} is missing")
            check_schema(value[key], inner, f"{where}.{key}")
    else:
        container, inner = schema
        if container == "list":
            if not isinstance(value, list):
                raise ValueError(f"{where} must be a list, got {_short(value)}")
            for index, item in enumerate(value):
                check_schema(item, inner, f"{where}[{index}]")
        else:
            if not isinstance(value, dict):
                raise ValueError(f"{where} must be an object, got {_short(value)}")
            for key, item in value.items():
                check_schema(item, inner, f"{where}.{key}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_state(record: Any, path: Path) -> None:
    """Refuse (one CheckpointError naming the field) a state.json that does not fit `STATE`."""
    try:
        check_schema(record, STATE, "state")
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}; resume from another checkpoint or start a new run") from None


# --- optimizer, scheduler, generators -----------------------------------------------------------
def _same_structure(saved: Any, fresh: Any, where: str) -> None:
    """Raise ValueError unless `saved` has the JSON structure of `fresh` (keys, lengths, kinds)."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            raise ValueError(f"{where} must have the keys {sorted(fresh)}, got {_short(saved)}")
        for key in fresh:
            _same_structure(saved[key], fresh[key], f"{where}.{key}")
    elif isinstance(fresh, (list, tuple)):
        if not isinstance(saved, list) or len(saved) != len(fresh):
            raise ValueError(f"{where} must be a list of {len(fresh)}, got {_short(saved)}")
        for index, (a, b) in enumerate(zip(saved, fresh)):
            _same_structure(a, b, f"{where}[{index}]")
    elif isinstance(fresh, bool) or fresh is None or isinstance(fresh, str):
        if type(saved) is not type(fresh):
            raise ValueError(f"{where} must be {type(fresh).__name__}, got {_short(saved)}")
    elif isinstance(fresh, (int, float)):
        if type(saved) is not type(fresh) or not _is_finite(saved):
            raise ValueError(f"{where} must be a finite {type(fresh).__name__}, got {_short(saved)}")


def _state_after_one_step(optimizer: torch.optim.Optimizer) -> dict[str, bool]:
    """The per-parameter state an optimizer of this type and settings creates: key -> whether the
    value has the parameter's shape (True) or is a scalar (False). Learned from a 2-element probe."""
    probe = torch.zeros(2, requires_grad=True)
    accepted = inspect.signature(type(optimizer)).parameters
    settings = {k: v for k, v in optimizer.param_groups[0].items() if k in accepted and k != "params"}
    scratch = type(optimizer)([probe], **settings)
    probe.grad = torch.zeros(2)
    scratch.step()
    return {key: torch.is_tensor(value) and value.shape == probe.shape for key, value in scratch.state[probe].items()}


def optimizer_state(plain: dict[str, Any], tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    path: Path) -> dict[str, Any]:
    """The optimizer state dict to load, from state.json's `plain` part and optimizer.safetensors'
    `tensors`, after checking it against this run's optimizer (ValueError naming the entry)."""
    fresh = optimizer.state_dict()
    if len(plain["param_groups"]) != len(fresh["param_groups"]):
        raise ValueError(f"the optimizer has {len(plain['param_groups'])} parameter groups, this run "
                         f"{len(fresh['param_groups'])}")
    for index, (saved, group) in enumerate(zip(plain["param_groups"], fresh["param_groups"])):
        _same_structure(saved, group, f"optimizer.param_groups[{index}]")
        if saved["params"] != group["params"]:
            raise ValueError(f"optimizer.param_groups[{index}].params differ from this run's")
    shapes = [p.shape for group in optimizer.param_groups for p in group["params"]]
    expected = _state_after_one_step(optimizer)
    state = {}
    for index, entry in plain["state"].items():
        where = f"optimizer.state.{index}"
        if not index.isdigit() or int(index) >= len(shapes):
            raise ValueError(f"{where}: this run's optimizer has {len(shapes)} parameters")
        if set(entry) != set(expected):
            raise ValueError(f"{where} must hold {sorted(expected)}, got {sorted(entry)}")
        values = {}
        for key, value in entry.items():
            if isinstance(value, dict):
                if value["tensor"] not in tensors:
                    raise ValueError(f"{where}.{key} names tensor {value['tensor']!r}, which {path.name} lacks")
                value = tensors[value["tensor"]]
                shape = shapes[int(index)] if expected[key] else torch.Size([])
                if value.shape != shape:
                    raise ValueError(f"{where}.{key} has shape {tuple(value.shape)}, expected {tuple(shape)}")
            values[key] = value
        state[int(index)] = values
    return {"state": state, "param_groups": plain["param_groups"]}


def check_scheduler(saved: dict[str, Any], scheduler, step: int) -> None:
    """ValueError unless `saved` has this run's scheduler structure and stands at optimizer step `step`."""
    _same_structure(saved, scheduler.state_dict(), "scheduler")
    if saved.get("last_epoch", step) != step:
        raise ValueError(f"scheduler.last_epoch is {saved['last_epoch']}, the checkpoint's step {step}")


def check_rng(tensors: dict[str, torch.Tensor], states: list[dict[str, Any]], world_size: int) -> None:
    """ValueError unless every rank's generator states would be accepted (tried on scratch generators)."""
    if len(states) != world_size:
        raise ValueError(f"rng holds {len(states)} ranks' states, world_size is {world_size}")
    numpy = optional_numpy()
    for rank, plain in enumerate(states):
        state = tensors.get(f"rank{rank}.torch")
        if state is None or state.dtype != torch.uint8:
            raise ValueError(f"rank{rank}.torch must be a uint8 generator state")
        try:
            torch.Generator().set_state(state)
            version, internal, gauss = plain["python"]
            random.Random().setstate((version, tuple(internal), gauss))
            if numpy is not None and "numpy" in plain:
                name, keys, position, has_gauss, cached = plain["numpy"]
                numpy.random.RandomState().set_state(
                    (name, numpy.asarray(keys, dtype=numpy.uint32), position, has_gauss, cached))
        except (RuntimeError, TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"rank {rank}'s generator state is not valid ({error})") from None


def optional_numpy():
    try:
        import numpy
    except ImportError:
        return None
    return numpy
