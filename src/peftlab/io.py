"""Atomic file writes: a reader never sees a half-written file.

Every file peftlab writes (adapters, checkpoints, reports) goes to a temporary file in the same
folder, is flushed to disk, then renamed over the destination (`os.replace` is atomic on POSIX).
Tensors are read only through safetensors, which cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `destination`; rename it into place if the block succeeds."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(destination: str | os.PathLike, data: Any) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(destination: str | os.PathLike, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text)


def write_safetensors(destination: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Save tensors (made contiguous, on CPU, unshared) atomically in safetensors format."""
    plain = {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in tensors.items()}
    with atomic_path(destination) as temporary:
        save_file(plain, str(temporary), metadata=metadata)
