"""Data-parallel training over several processes: `torchrun --nproc_per_node=N -m peftlab train ...`.

`torchrun` and `accelerate launch --multi_gpu` (which calls torchrun) start N copies of the
command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `setup` reads them
and joins the process group (gloo on CPU, NCCL on CUDA, where LOCAL_RANK picks the GPU). One
optimizer step with N ranks:

    micro-batch rows r_0 .. r_{B-1} (B = batch_size, the GLOBAL batch)
    rank k keeps the contiguous slice r_{⌊kB/N⌋} .. r_{⌊(k+1)B/N⌋-1}
    items_i  = Σ_ranks local items of micro-batch i         one all-reduce of a (grad_accum,) vector
    loss_k   = Σ_i mean_loss_k,i · local_items_k,i / Σ_i items_i
    g        = Σ_ranks ∇loss_k                               all-reduce of the trainable gradients

so the summed gradient is exactly the one a single process computes on the whole batch, and N
ranks with the same --batch-size follow the same trajectory as one process (up to float
summation order). Every rank then takes the same AdamW step and the parameters stay equal.

Why a manual all-reduce and not `DistributedDataParallel`: only the trainable tensors
(`PeftModel.trainable_parameters()`, a few MB for an adapter) need reducing, and some of them
live outside the wrapped model's module tree (model-level hooks such as prefix / prompt tuning
sit in `PeftModel.hooks` and run in `PeftModel.forward`). DDP would wrap `PeftModel`, register
reducer hooks on every parameter that requires grad, and need `find_unused_parameters` for the
adapters that a forward does not touch; flattening the gradients into a few buckets after the
backward is the same communication with none of those conditions, and gradient accumulation
needs no `no_sync` because nothing is reduced before the last micro-batch.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from peftlab.errors import ConfigError
from peftlab.train.runtime import resolve_device

BUCKET_BYTES = 25 * 2**20  # gradients reduced per collective call (DDP's default bucket size)
_ENV = ("RANK", "MASTER_ADDR", "MASTER_PORT")
_owned = False  # whether `setup` created the process group (and so `shutdown` may destroy it)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run: `rank` of `world_size`, computing on `device`."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and the adapter and shows the progress bar."""
        return self.rank == 0

    def shard(self, rows: list[int]) -> list[int]:
        """This rank's contiguous slice of a micro-batch's rows (sizes differ by at most one)."""
        n = len(rows)
        return rows[n * self.rank // self.world_size:n * (self.rank + 1) // self.world_size]

    def sum_counts(self, counts: list[int]) -> list[int]:
        """Element-wise sum of `counts` over the ranks (the global items of each micro-batch)."""
        if self.world_size == 1:
            return counts
        summed = torch.tensor(counts, dtype=torch.int64, device=self.device)
        dist.all_reduce(summed)
        return summed.tolist()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over the ranks."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def reduce_gradients(self, params: list[nn.Parameter]) -> None:
        """Sum the gradients of `params` over the ranks, in flat buckets of one dtype each.

        A parameter whose gradient is None on some ranks (its rank had no rows, or the forward
        did not reach it) gets zeros there; one that has none on every rank stays None, as in a
        single process, so AdamW skips it the same way.
        """
        if self.world_size == 1:
            return
        present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=self.device)
        dist.all_reduce(present)
        buckets: dict[torch.dtype, list[list[torch.Tensor]]] = {}  # dtype -> buckets of gradients
        filled: dict[torch.dtype, int] = {}  # bytes in the last bucket of each dtype
        for param, count in zip(params, present.tolist()):
            if not count:
                continue
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            grad, size = param.grad, param.grad.numel() * param.grad.element_size()
            chain = buckets.setdefault(grad.dtype, [[]])
            if chain[-1] and filled.get(grad.dtype, 0) + size > BUCKET_BYTES:
                chain.append([])
                filled[grad.dtype] = 0
            chain[-1].append(grad)
            filled[grad.dtype] = filled.get(grad.dtype, 0) + size
        for chain in buckets.values():
            for grads in chain:
                flat = torch.cat([g.reshape(-1) for g in grads])  # (Σ numel,)
                dist.all_reduce(flat)
                offset = 0
                for grad in grads:
                    grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                    offset += grad.numel()

    def broadcast_parameters(self, params: list[nn.Parameter]) -> None:
        """Copy rank 0's values into every rank (a run starts from one initialisation)."""
        if self.world_size > 1:
            with torch.no_grad():
                for param in params:
                    dist.broadcast(param.data, src=0)

    def gather_objects(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (small objects only: used for RNG states)."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait for every rank (the others wait here while rank 0 writes or evaluates)."""
        if self.world_size > 1:  # NCCL is told the device so it does not guess one
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


def world_size_from_env() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_name: str) -> Distributed:
    """This process's `Distributed`, joining the process group that the launcher's variables describe.

    A single process (no WORLD_SIZE, or 1) gets rank 0 of 1 on `resolve_device(device_name)`. A
    process group that the caller already initialised is used as it is.
    """
    world = world_size_from_env()
    device = resolve_device(device_name)
    if world <= 1:
        return Distributed(0, 1, device)
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices are "
                              "visible: start at most that many processes per node")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        missing = [name for name in _ENV if name not in os.environ]
        if missing:
            raise ConfigError(f"WORLD_SIZE={world} is set but {', '.join(missing)} is not: start the run with "
                              "torchrun --nproc_per_node=N -m peftlab train ... (or accelerate launch)")
        cuda = device.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        global _owned
        _owned = True
        atexit.register(shutdown)
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def shutdown() -> None:
    """Leave the process group if `setup` created it (the CLI calls this when a run is done)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False
