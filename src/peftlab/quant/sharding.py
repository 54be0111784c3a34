"""NF4 layers that FSDP2 can shard: the whole quantization state as one flat byte parameter.

`Linear4bit` keeps its NF4 state as buffers, and FSDP2 (`torch.distributed.fsdp.fully_shard`)
shards parameters only: buffers would stay whole on every rank, which is most of a QLoRA model.
`ShardableLinear4bit` stores the same state as one uint8 ``nn.Parameter`` (frozen), laid out so
every part can be viewed back without a copy::

    nf4_storage (bytes,) uint8
    ├─ nested_offset   4 B            float32, double quantization only   ┐ float32 parts first, so
    ├─ nested_absmax   4·⌈blocks/256⌉ float32, double quantization only   │ their byte offsets stay
    ├─ absmax          4·blocks B     float32 (no double quantization)    ┘ multiples of 4
    │               or blocks B       uint8 codes (double quantization)
    └─ packed          ⌈n/2⌉ B        two NF4 codes per byte

Why bytes and not float containers: FSDP2 shards each parameter along dim 0 and all-gathers a
block's parameters together (as bytes when their dtypes differ), and its mixed-precision policy
casts floating-point parameters only, so an integer parameter keeps its bits under any
`MixedPrecisionPolicy` while the float32 scales inside it are never rounded to bfloat16. Inside
a block's forward and backward FSDP2 hands the layer the all-gathered bytes; `quant_state` views
them as an `NF4State` and the `Linear4bit` forward runs unchanged, so a sharded layer computes
bit for bit what the unsharded one does. Outside forward the parameter is each rank's shard
(a DTensor): only the rank's ⌈bytes/N⌉ stay resident.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftlab.core.targets import replace_module
from peftlab.quant.codebook import NESTED_BLOCK_SIZE
from peftlab.quant.linear4bit import Linear4bit
from peftlab.quant.nf4 import NF4State

_FLOAT32 = 4  # bytes


def storage_layout(shape: tuple[int, ...], block_size: int, double_quant: bool) -> dict[str, tuple[int, int]]:
    """{part: (byte start, byte stop)} of a flat NF4 storage for a weight of `shape` (pure)."""
    numel = math.prod(shape)
    blocks = -(-numel // block_size)
    sizes = []
    if double_quant:
        sizes += [("nested_offset", _FLOAT32), ("nested_absmax", _FLOAT32 * -(-blocks // NESTED_BLOCK_SIZE)),
                  ("absmax", blocks)]
    else:
        sizes.append(("absmax", _FLOAT32 * blocks))
    sizes.append(("packed", -(-numel // 2)))
    layout, start = {}, 0
    for name, size in sizes:
        layout[name] = (start, start + size)
        start += size
    return layout


def pack_state(state: NF4State) -> torch.Tensor:
    """The state's tensors as one contiguous uint8 tensor laid out by `storage_layout`."""
    parts = state.as_tensors()  # nested_offset comes as (1,)
    layout = storage_layout(state.shape, state.block_size, state.double_quant)
    return torch.cat([parts[name].reshape(-1).view(torch.uint8) for name in layout])


def view_state(storage: torch.Tensor, shape: tuple[int, ...], block_size: int, double_quant: bool,
               dtype: torch.dtype) -> NF4State:
    """The `NF4State` whose tensors are views into `storage` (the whole, unsharded bytes)."""
    part = {name: storage[start:stop] for name, (start, stop) in storage_layout(shape, block_size, double_quant).items()}
    if not double_quant:
        return NF4State(part["packed"], part["absmax"].view(torch.float32), shape, block_size, dtype)
    return NF4State(part["packed"], part["absmax"], shape, block_size, dtype,
                    part["nested_absmax"].view(torch.float32), part["nested_offset"].view(torch.float32).reshape(()))


class ShardableLinear4bit(Linear4bit):
    """A `Linear4bit` whose NF4 state is the frozen uint8 parameter ``nf4_storage`` (see above).

    Built from a `Linear4bit`, whose bias Parameter it shares. The state's tensors (``packed``,
    ``absmax``, ...) are read-only views of ``nf4_storage``, so everything `Linear4bit` does
    (forward, `dequantized_weight` for merging, `to_float_layer`) works unchanged.
    """

    def __init__(self, layer: Linear4bit) -> None:
        nn.Module.__init__(self)  # not Linear4bit.__init__: it would register the state as buffers
        state = layer.quant_state
        self.out_features, self.in_features = state.shape
        self.block_size, self.weight_dtype, self.double_quant = state.block_size, state.dtype, state.double_quant
        self.compute_dtype, self.from_conv1d = layer.compute_dtype, layer.from_conv1d
        self.bias = layer.bias
        self.nf4_storage = nn.Parameter(pack_state(state), requires_grad=False)  # (bytes,) uint8

    @property
    def quant_state(self) -> NF4State:
        return view_state(self.nf4_storage, (self.out_features, self.in_features), self.block_size,
                          self.double_quant, self.weight_dtype)

    packed = property(lambda self: self.quant_state.packed)
    absmax = property(lambda self: self.quant_state.absmax)
    nested_absmax = property(lambda self: self.quant_state.nested_absmax)
    nested_offset = property(lambda self: self.quant_state.nested_offset)

    def _apply(self, fn, recurse=True):
        # `Linear4bit._apply` guards its float32 scale buffers from casts; a uint8 parameter is
        # never cast by `.to(dtype)` / `.half()`, so the plain module rule is the right one here.
        return nn.Module._apply(self, fn, recurse)

    def extra_repr(self) -> str:  # from fields only: under FSDP the storage is a shard outside forward
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 block_size={self.block_size}, double_quant={self.double_quant}, "
                f"compute_dtype={self.compute_dtype}, one uint8 parameter of {self.nf4_storage.numel():,} bytes")


def make_shardable(model: nn.Module) -> list[str]:
    """Replace every `Linear4bit` inside `model` (adapter wrappers' base layers included) by a
    `ShardableLinear4bit` holding the same state; return their paths."""
    paths = [path for path, module in model.named_modules()
             if isinstance(module, Linear4bit) and not isinstance(module, ShardableLinear4bit)]
    for path in paths:
        replace_module(model, path, ShardableLinear4bit(model.get_submodule(path)))
    return paths
