"""Checkpoints: everything a run needs to continue exactly, written so that a crash never leaves half of one.

    <checkpoint_dir>/                    default <out>/checkpoints
      latest                             "step-12", replaced atomically once step-12/ is complete
      step-6/ step-12/                   the newest `keep_checkpoints` complete checkpoints
        trainable.safetensors            peft_model.trainable_parameters(), by name
        optimizer.safetensors            the optimizer's per-parameter tensors, "<index>.<key>"
        rng.safetensors                  torch generator states per rank: "rank<k>.torch" (CPU), "rank<k>.cuda"
        state.json                       position (step, epoch, batch_in_epoch), the optimizer's non-tensor
                                         part, scheduler state, python / numpy RNG per rank, loss history,
                                         evaluations, the open loss window, TrainConfig, method configs
        complete.json                    written last: the size and sha256 of every file above
      step-18.tmp-4242/                  being written by process 4242 (or left by a killed one): never read

A checkpoint is written into `step-N.tmp-<pid>/` (every file fsync'd), the folder is fsync'd and
renamed to `step-N/`, the parent folder fsync'd, and only then `latest` is updated. Resuming takes a
checkpoint folder or a checkpoints folder (then `latest`, or the highest complete step when
`latest` is missing or stale); a folder without `complete.json` is not a checkpoint. A complete
one whose files differ from their recorded size or sha256 is skipped for the previous one, with a
warning naming the file (`checkpoint_verify.py` says what else is checked before anything is
restored). Tensors are read only through safetensors, the rest is JSON.

A resume with a different TrainConfig (beyond the runtime fields in `RESUMABLE_CHANGES`), other
method configs, other training data or another number of processes is refused with an error naming
the first field that differs, since the continued run could not be the one that was checkpointed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from peftlab.core.model import PeftModel
from peftlab.errors import ConfigError
from peftlab.io import fsync_folder, note_casts, process_alive, write_json, write_safetensors, write_text
from peftlab.train.checkpoint_verify import (
    CheckpointError, check_rng, check_scheduler, check_state, file_record, files_problem, optimizer_state,
    optional_numpy, read_tensors, recorded_files,
)
from peftlab.train.config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest"
COMPLETE = "complete.json"
STATE = "state.json"
TRAINABLE, OPTIMIZER, RNG = "trainable.safetensors", "optimizer.safetensors", "rng.safetensors"
FORMAT_VERSION = 2  # 2: complete.json records a sha256 per file
# TrainConfig fields that only change where or how fast the run computes, or what it reports.
RESUMABLE_CHANGES = frozenset({"num_threads", "device", "eval_every", "eval_batch_size", "log_every",
                               "checkpoint_every", "keep_checkpoints", "stop_if_loss_rises_after",
                               "gradient_checkpointing", "generate", "max_new_tokens", "stop_after",
                               "track_memory"})
_STEP = re.compile(r"step-(\d+)")
_TEMPORARY = re.compile(r"step-\d+\.(?:tmp|old)-(\d+)")


def data_fingerprint(examples) -> str:
    """sha256 of the training examples in order: a resume must see the same data in the same order."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(repr(example).encode())
    return digest.hexdigest()


# --- random number generators ------------------------------------------------------------------
def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's generator states: torch CPU (and CUDA) as uint8 tensors, python / numpy as JSON."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": _jsonable(random.getstate())}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    numpy = optional_numpy()
    if numpy is not None:
        name, keys, position, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [name, keys.tolist(), position, has_gauss, cached]
    return state


def restore_rng(folder: Path, record: dict[str, Any], rank: int, device: torch.device) -> None:
    """Set this rank's generators to the states `capture_rng` saved in checkpoint `folder`
    (checked by `read_checkpoint`)."""
    tensors, plain = read_tensors(folder / RNG, weights=False), record["rng"][rank]
    torch.set_rng_state(tensors[f"rank{rank}.torch"])
    if device.type == "cuda" and f"rank{rank}.cuda" in tensors:
        torch.cuda.set_rng_state(tensors[f"rank{rank}.cuda"], device)
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = optional_numpy()
    if numpy is not None and "numpy" in plain:
        name, keys, position, has_gauss, cached = plain["numpy"]
        numpy.random.set_state((name, numpy.asarray(keys, dtype=numpy.uint32), position, has_gauss, cached))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- writing -----------------------------------------------------------------------------------
def save_checkpoint(directory: str | Path, *, peft_model: PeftModel, optimizer: torch.optim.Optimizer,
                    scheduler, position: dict[str, int], progress: dict[str, Any], config: TrainConfig,
                    fingerprint: str, rng_states: list[dict[str, Any]], keep: int) -> Path:
    """Write checkpoint `step-<position["step"]>` into `directory` atomically; keep the newest `keep`.

    `rng_states` holds `capture_rng()` of every rank in rank order; `progress` is the loop's
    JSON-able record (history, evaluations, open loss window).
    """
    directory = Path(directory)
    final = directory / f"step-{position['step']}"
    temporary = directory / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    optimizer_tensors, optimizer_plain = _split_optimizer_state(optimizer.state_dict())
    rng_tensors = {f"rank{rank}.{key}": state[key] for rank, state in enumerate(rng_states)
                   for key in ("torch", "cuda") if key in state}
    write_safetensors(temporary / TRAINABLE, dict(peft_model.trainable_parameters()))
    write_safetensors(temporary / OPTIMIZER, optimizer_tensors)
    write_safetensors(temporary / RNG, rng_tensors)
    write_json(temporary / STATE, {
        "format_version": FORMAT_VERSION, **position, "progress": progress,
        "optimizer": optimizer_plain, "scheduler": _jsonable(scheduler.state_dict()),
        "rng": [{k: v for k, v in state.items() if k not in ("torch", "cuda")} for state in rng_states],
        "world_size": len(rng_states), "train_config": config.to_dict(),
        "adapters": {name: peft_model.configs[name].to_dict() for name in peft_model.active_adapters},
        "train_examples_sha256": fingerprint,
    })
    files = {path.name: file_record(path) for path in sorted(temporary.iterdir())}
    write_json(temporary / COMPLETE, {"step": position["step"], "files": files})
    fsync_folder(temporary)
    if final.exists():  # a resume from an earlier checkpoint reached this step again
        _retire(final, directory / f"{final.name}.old-{os.getpid()}")
    temporary.rename(final)
    fsync_folder(directory)
    write_text(directory / LATEST, final.name + "\n")
    _prune(directory, keep)
    return final


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors by "<param index>.<key>", the rest as JSON with {"tensor": key} in their place)."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        plain[str(index)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
                plain[str(index)][key] = {"tensor": f"{index}.{key}"}
            else:
                plain[str(index)][key] = value
    return tensors, _jsonable({"state": plain, "param_groups": state_dict["param_groups"]})


def _retire(folder: Path, aside: Path) -> None:
    """Delete a checkpoint so that no moment shows a partial folder as complete: marker first."""
    (folder / COMPLETE).unlink(missing_ok=True)
    if aside != folder:
        folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _prune(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and folders left by dead writers."""
    for folder in complete_checkpoints(directory)[:-keep]:
        _retire(folder, folder)
    for folder in directory.iterdir():
        match = _TEMPORARY.fullmatch(folder.name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


# --- finding and reading -----------------------------------------------------------------------
def _marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(folder: Path) -> bool:
    """Whether `folder` is a finished checkpoint: the marker exists and every file has its size
    (cheap: the checksums are compared by `verification_problem` when a run resumes from it)."""
    try:
        files = recorded_files(_marker(folder))
        return all((folder / name).stat().st_size == entry["size"] for name, entry in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def verification_problem(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be trusted (a file missing, cut short or changed), or None."""
    marker = _marker(folder)
    if marker is None:
        return f"{COMPLETE} is missing or unreadable"
    return files_problem(folder, marker)


def complete_checkpoints(directory: Path) -> list[Path]:
    """The complete `step-N` folders of `directory`, oldest step first."""
    found = [(int(match.group(1)), folder) for folder in directory.iterdir()
             if (match := _STEP.fullmatch(folder.name)) and folder.is_dir() and is_complete(folder)]
    return [folder for _, folder in sorted(found)]


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint to resume from: `path` itself, or the latest verified one inside it.

    `path` may be a checkpoint folder, a checkpoints folder, or a run folder that holds `checkpoints/`.
    Inside a folder, a complete checkpoint that fails verification is skipped for the previous
    one with a warning; a checkpoint folder given itself must pass.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"--resume {path}: no such folder; give a checkpoint folder or a checkpoints folder")
    if (path / COMPLETE).exists():
        problem = verification_problem(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} fails verification ({problem}): resume from {path.parent} "
                                  "to take the newest checkpoint that passes")
        return path
    if _STEP.fullmatch(path.name) or _TEMPORARY.fullmatch(path.name) or (path / STATE).exists():
        raise CheckpointError(f"{path} is an incomplete checkpoint (its writer was stopped): resume from "
                              f"{path.parent} to take the latest complete one")
    directory = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    candidates = [folder for folder in directory.iterdir() if _STEP.fullmatch(folder.name)
                  and folder.is_dir() and (folder / COMPLETE).exists()] if directory.is_dir() else []
    candidates.sort(key=lambda folder: int(_STEP.fullmatch(folder.name).group(1)), reverse=True)
    try:
        named = directory / (directory / LATEST).read_text().strip()
    except (OSError, ValueError):
        named = None
    if named in candidates:  # the newest the last writer finished, then the others newest first
        candidates.insert(0, candidates.pop(candidates.index(named)))
    skipped = []
    for folder in candidates:
        problem = verification_problem(folder)
        if problem is None:
            return folder
        skipped.append(folder.name)
        log.warning("checkpoint %s fails verification (%s): skipped for the previous complete one", folder, problem)
    if skipped:
        raise CheckpointError(f"no valid checkpoint in {directory}: {', '.join(skipped)} "
                              f"{'fails' if len(skipped) == 1 else 'fail'} verification; "
                              "start a new run (without --resume)")
    raise CheckpointError(f"no complete checkpoint in {directory}: start a new run (without --resume)")


def read_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint's state.json, checked (`checkpoint_verify.STATE`, generator states included)."""
    path = folder / STATE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read ({error}): resume from another checkpoint") from None
    version = record.get("format_version") if isinstance(record, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{folder} has checkpoint format {version!r}, this peftlab reads {FORMAT_VERSION}: "
                              "resume with the peftlab version that wrote it, or start a new run")
    check_state(record, path)
    try:
        check_rng(read_tensors(folder / RNG, weights=False), record["rng"], record["world_size"])
    except ValueError as error:
        raise CheckpointError(f"{folder / RNG}: {error}; resume from another checkpoint") from None
    return record


def check_compatible(record: dict[str, Any], folder: Path, *, config: TrainConfig, peft_model: PeftModel,
                     fingerprint: str, world_size: int) -> None:
    """Refuse (ConfigError naming the field) a resume whose run would differ from the checkpointed one."""
    def refuse(what: str, saved: Any, now: Any) -> None:
        raise ConfigError(f"cannot resume from {folder}: {what} is {saved!r} in the checkpoint but {now!r} in "
                          "this run; use the checkpoint's value or start a new run without --resume")

    current, saved_config = _jsonable(config.to_dict()), record["train_config"]
    for key in sorted(set(saved_config) | set(current)):
        if key not in RESUMABLE_CHANGES and current.get(key) != saved_config.get(key):
            refuse(f"train config field {key!r}", saved_config.get(key), current.get(key))
    adapters = {name: _jsonable(peft_model.configs[name].to_dict()) for name in peft_model.active_adapters}
    if set(adapters) != set(record["adapters"]):
        refuse("the set of active adapters", sorted(record["adapters"]), sorted(adapters))
    for name, fields in record["adapters"].items():
        for key in sorted(set(fields) | set(adapters[name])):
            if fields.get(key) != adapters[name].get(key):
                refuse(f"adapter {name!r} config field {key!r}", fields.get(key), adapters[name].get(key))
    if record["world_size"] != world_size:
        refuse("the number of processes (each has its own dropout stream)", record["world_size"], world_size)
    if record["train_examples_sha256"] != fingerprint:
        refuse("the training data's sha256", record["train_examples_sha256"][:12], fingerprint[:12])


def restore(folder: Path, record: dict[str, Any], *, peft_model: PeftModel, optimizer: torch.optim.Optimizer,
            scheduler) -> None:
    """Load the trainable tensors, the optimizer and the scheduler from `folder` (RNG: `restore_rng`).

    Everything is read and checked first, so a refused checkpoint leaves the run untouched."""
    tensors = read_tensors(folder / TRAINABLE)
    params = peft_model.trainable_parameters()
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{folder / TRAINABLE} does not match the model: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}; resume with the method config that wrote it")
    for name, param in params.items():
        if tensors[name].shape != param.shape:
            raise CheckpointError(f"{folder / TRAINABLE}: {name} has shape {tuple(tensors[name].shape)}, the "
                                  f"model {tuple(param.shape)}; resume with the method config that wrote it")
    try:
        optimizer_dict = optimizer_state(record["optimizer"], read_tensors(folder / OPTIMIZER), optimizer,
                                         folder / OPTIMIZER)
        check_scheduler(record["scheduler"], scheduler, record["step"])
    except ValueError as error:
        raise CheckpointError(f"{folder / STATE}: {error}; resume from another checkpoint or start a new run") \
            from None
    note_casts(folder / TRAINABLE, {name: (tensors[name].dtype, param.dtype) for name, param in params.items()})
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])
    optimizer.load_state_dict(optimizer_dict)
    scheduler.load_state_dict(record["scheduler"])
