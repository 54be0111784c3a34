"""Several processes, one run: `torchrun --nproc_per_node=N -m peftlab train ... [--fsdp]`.

`torchrun` and `accelerate launch --multi_gpu` (which calls torchrun) start N copies of the
command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `setup` reads them
and joins the process group (gloo on CPU, NCCL on CUDA, where LOCAL_RANK picks the GPU). The
gradients travel through PyTorch's own engines (`parallelize`):

- data parallel (default): `DistributedDataParallel` over the `PeftModel`, so model-level hooks
  (prefix, prompt) and every adapter layer are inside the wrapped module. DDP reduces only the
  parameters that require grad (the adapters), in its buckets, overlapped with the backward;
- sharded (`--fsdp`): FSDP2, `fully_shard` on every transformer block and then on the whole
  `PeftModel`. Each rank keeps 1/N of every parameter, trainable and frozen alike, and gathers a
  block's parameters only while that block computes. One `MixedPrecisionPolicy` for all of them:
  parameters stay in their own floating dtype (float32; bf16 runs use autocast, as in one
  process), so nothing is cast and no "uniform dtype" flattening exists. NF4 layers become
  `ShardableLinear4bit` first (their packed codes and scales as one uint8 parameter, which FSDP
  shards and gathers as bytes): `peftlab.quant.sharding`.

One optimizer step with N ranks, both engines:

    micro-batch rows r_0 .. r_{B-1} (B = batch_size, the GLOBAL batch)
    rank k keeps the contiguous slice r_{⌊kB/N⌋} .. r_{⌊(k+1)B/N⌋-1}
    items_i  = Σ_ranks local items of micro-batch i         one all-reduce of a (grad_accum,) vector
    loss_k   = Σ_i mean_loss_k,i · local_items_k,i / Σ_i items_i
    g        = Σ_ranks ∇loss_k                               the engine's reduction, as a SUM

The engines average by default; here they sum (a DDP communication hook, FSDP's divide factor
1), because the loss is already weighted by the global item count: the summed gradient is the
one a single process computes on the whole batch, and N ranks follow the same trajectory as one
(up to float summation order). Only the last micro-batch of a step synchronises (`accumulate`).
Every rank runs every micro-batch, a rank without rows in it on a stand-in row whose loss
weighs 0: the engines' collectives must be entered by every rank in the same order.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from peftlab.core.model import PeftModel
from peftlab.errors import ConfigError
from peftlab.models.architecture import transformer_layers
from peftlab.quant.sharding import make_shardable
from peftlab.train.runtime import resolve_device

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

    def gather_objects(self, value: Any) -> list[Any]:
        """`value` of every rank, in rank order (small objects only: RNG states, byte counts)."""
        if self.world_size == 1:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        """Wait for every rank (the others wait here while rank 0 writes or evaluates)."""
        if self.world_size > 1:  # NCCL is told the device so it does not guess one
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)


def _sum_hook(state, bucket):  # unannotated: DDP checks annotations, which this module's are strings
    """DDP communication hook: all-reduce a bucket (a `dist.GradBucket`) as a SUM (DDP's default
    divides by N); returns the future of the reduced flat gradients."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda done: done.value()[0])


class Engine:
    """How this process's model computes and reduces gradients: one process, DDP or FSDP2.

    `module` is what the forward pass calls (the DDP wrapper, or the `PeftModel` itself, which
    FSDP2 turns into an `FSDPModule` in place); `peft_model` is what everything else reads.
    """

    def __init__(self, peft_model: PeftModel, dist_info: Distributed, module: nn.Module, sharded: bool) -> None:
        self.peft_model, self.dist, self.module, self.sharded = peft_model, dist_info, module, sharded

    @contextlib.contextmanager
    def accumulate(self, last: bool) -> Iterator[None]:
        """Forward and backward of one micro-batch; gradients are reduced only when `last`."""
        if isinstance(self.module, nn.parallel.DistributedDataParallel) and not last:
            with self.module.no_sync():
                yield
            return
        if self.sharded:
            self.peft_model.set_requires_gradient_sync(last)  # every FSDP module below the root too
        yield


@contextlib.contextmanager
def whole_adapters(peft_model: PeftModel) -> Iterator[None]:
    """Inside, every trainable parameter is its whole tensor on every rank (a collective: every
    rank enters). Sharded, each is all-gathered and swapped in for the duration, so an adapter
    file written inside is the one a single process writes; the frozen base stays sharded."""
    if not peft_model.sharded:
        yield
        return
    swapped = []
    for module in peft_model.modules():
        for name, param in list(module._parameters.items()):
            if isinstance(param, DTensor) and param.requires_grad:
                module._parameters[name] = nn.Parameter(param.full_tensor().detach())
                swapped.append((module, name, param))
    try:
        yield
    finally:
        for module, name, param in swapped:
            module._parameters[name] = param


@contextlib.contextmanager
def evaluating(peft_model: PeftModel) -> Iterator[None]:
    """Around forwards outside training (evaluation, greedy decoding): sharded, the root's own
    parameters (embeddings, head, model-level hooks) are gathered for the duration, since
    `generate` calls the inner model and so never runs the root's gathering hook."""
    if not peft_model.sharded:
        yield
        return
    peft_model.unshard()
    try:
        yield
    finally:
        peft_model.reshard()


def resident_bytes(peft_model: PeftModel) -> dict[str, int]:
    """{"held": bytes of the transformer blocks' parameters this rank holds, "total": their whole
    size}: sharded, each rank holds about total / N."""
    held = total = 0
    for block in transformer_layers(peft_model.model):
        for param in block.parameters():
            local = param.to_local() if isinstance(param, DTensor) else param
            held += local.numel() * local.element_size()
            total += param.numel() * param.element_size()
    return {"held": held, "total": total}


def _fsdp_modules(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, FSDPModule)]


def parallelize(peft_model: PeftModel, dist_info: Distributed, *, fsdp: bool = False) -> Engine:
    """Put `peft_model` on this rank's device under the engine the run uses (see the module doc).

    One process: the model as it is. Several: DDP (rank 0's trainable values broadcast to all),
    or with `fsdp` FSDP2 per transformer block, the blocks' NF4 layers made shardable first.
    Afterwards the trainable parameters are new objects (DTensors when sharded): read
    `peft_model.trainable_parameters()` again for the optimizer.
    """
    if dist_info.world_size == 1:
        return Engine(peft_model, dist_info, peft_model.to(dist_info.device), sharded=False)
    if not fsdp:
        peft_model.to(dist_info.device)
        wrapped = nn.parallel.DistributedDataParallel(
            peft_model, device_ids=[dist_info.device.index] if dist_info.device.type == "cuda" else None,
            broadcast_buffers=False, gradient_as_bucket_view=True)
        wrapped.register_comm_hook(None, _sum_hook)
        return Engine(peft_model, dist_info, wrapped, sharded=False)
    return Engine(peft_model, dist_info, _fully_shard(peft_model, dist_info), sharded=True)


def _fully_shard(peft_model: PeftModel, dist_info: Distributed) -> PeftModel:
    """FSDP2 over the blocks, then the root; gradients reduced as sums (see the module doc)."""
    _broadcast(list(peft_model.trainable_parameters().values()), dist_info)  # one initialisation
    make_shardable(peft_model)
    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=None)  # every parameter keeps its dtype
    for block in transformer_layers(peft_model.model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(peft_model, mesh=mesh, mp_policy=policy)  # embeddings, head, hooks; moves all to the device
    peft_model.sharded = True
    for module in _fsdp_modules(peft_model):
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return peft_model


def _broadcast(params: list[nn.Parameter], dist_info: Distributed) -> None:
    """Rank 0's values of `params` on every rank, through this rank's device (NCCL sends only
    device tensors; before sharding the model may still be on the CPU)."""
    with torch.no_grad():
        for param in params:
            on_device = param.data.to(dist_info.device)
            dist.broadcast(on_device, src=0)
            param.data.copy_(on_device)


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
