"""Blockwise NF4 quantization with double quantization, as pure functions over a frozen state.

QLoRA (Dettmers et al. 2023) stores a frozen weight ``W`` of ``n`` values as

    codes[i]  = argmin_k |W[i] / absmax[b] - NF4[k]|     b = i // block_size   (4 bits each)
    absmax[b] = max_{i in block b} |W[i]|                                     (n / block_size)

and, with double quantization, the float32 absmax constants are themselves quantized to 8 bits
in blocks of 256 after subtracting their mean (they are all positive, so centring them doubles
the resolution of the signed 8-bit map)::

    absmax[b] ~= DYNAMIC[q[b]] * nested_absmax[b // 256] + offset

Dequantization is ``W[i] ~= NF4[codes[i]] * absmax[b]``. Two codes share a byte, the first
element in the high nibble — the bitsandbytes layout, so packed bytes are bit-identical.
The 4-bit level rounds to the nearest code (bucketize against midpoints, ties to the lower
code). The 8-bit level rounds through a 65,536-point grid over [-1, 1] (`rounding_lookup_table`):
constant time per value and bit-identical to bitsandbytes' CPU kernel; it can pick the neighbour
of the nearest code for a value within half a grid step (1.5e-5) of a midpoint (~0.2% of absmax
constants), which changes a scale by at most one step of the 8-bit map.

Everything works on whatever device the weight lives on; there are no host syncs in the hot path.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass

import torch

from peftlab.quant.codebook import (
    BLOCK_SIZES, LOOKUP_BINS, NESTED_BLOCK_SIZE, NF4_CODE, dynamic_map, midpoints, rounding_lookup_table,
)
from peftlab.quant.layout import nf4_bytes
from peftlab.quant.kernels import block_scales, dequantize_into

_FLOAT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def validate_block_size(block_size: int) -> int:
    """Return ``block_size`` if it is a power of two in 32..4096, else raise ValueError."""
    if block_size not in BLOCK_SIZES:
        raise ValueError(
            f"block_size={block_size!r} is not supported: use a power of two from "
            f"{BLOCK_SIZES[0]} to {BLOCK_SIZES[-1]} ({', '.join(map(str, BLOCK_SIZES))})"
        )
    return block_size


@dataclass(frozen=True, eq=False)
class NF4State:
    """Everything needed to rebuild a quantized tensor; tensors plus JSON-able metadata.

    ``packed``: (ceil(n/2),) uint8. ``absmax``: (n_blocks,) float32, or uint8 codes into the
    dynamic map when double-quantized, in which case ``nested_absmax`` is (ceil(n_blocks/256),)
    float32 and ``nested_offset`` a 0-d float32 tensor.
    """

    packed: torch.Tensor
    absmax: torch.Tensor
    shape: tuple[int, ...]
    block_size: int
    dtype: torch.dtype = torch.float32
    nested_absmax: torch.Tensor | None = None
    nested_offset: torch.Tensor | None = None

    def __post_init__(self):
        validate_block_size(self.block_size)
        n_blocks = -(-self.numel // self.block_size)
        expected = {"packed": ((-(-self.numel // 2),), torch.uint8),
                    "absmax": ((n_blocks,), torch.uint8 if self.double_quant else torch.float32)}
        if self.double_quant:
            expected["nested_absmax"] = ((-(-n_blocks // NESTED_BLOCK_SIZE),), torch.float32)
            expected["nested_offset"] = ((), torch.float32)
        for name, (shape, dtype) in expected.items():
            tensor = getattr(self, name)
            if tensor is None or tuple(tensor.shape) != shape or tensor.dtype != dtype:
                found = None if tensor is None else (tuple(tensor.shape), tensor.dtype)
                raise ValueError(f"NF4State.{name} for shape {self.shape}, block_size {self.block_size} "
                                 f"must be {shape} {dtype}, got {found}")

    @property
    def double_quant(self) -> bool:
        return self.nested_absmax is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def nbytes(self) -> int:
        """Bytes of the stored tensors (the shared code books are constants, not counted)."""
        return sum(t.numel() * t.element_size() for t in self.as_tensors().values())

    def as_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors, ready for ``safetensors.torch.save_file`` (contiguous, unshared)."""
        tensors = {"packed": self.packed, "absmax": self.absmax}
        if self.double_quant:
            tensors["nested_absmax"] = self.nested_absmax
            tensors["nested_offset"] = self.nested_offset.reshape(1)  # safetensors needs rank >= 1
        return {name: t.contiguous() for name, t in tensors.items()}

    def metadata(self) -> dict[str, str]:
        """Small string metadata (safetensors stores ``dict[str, str]``)."""
        info = {"shape": list(self.shape), "block_size": self.block_size,
                "dtype": str(self.dtype).removeprefix("torch."), "double_quant": self.double_quant}
        return {"nf4": json.dumps(info)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> NF4State:
        """Inverse of ``as_tensors()`` + ``metadata()``; ``__post_init__`` validates what it reads."""
        if "nf4" not in metadata:
            raise ValueError(f"no 'nf4' entry in the metadata (keys: {sorted(metadata)}); "
                             "save it with NF4State.metadata()")
        info = json.loads(metadata["nf4"])
        expected = {"packed", "absmax"} | ({"nested_absmax", "nested_offset"} if info["double_quant"] else set())
        if set(tensors) != expected:
            raise ValueError(f"NF4 tensors {sorted(tensors)} do not match the expected {sorted(expected)}")
        offset = tensors.get("nested_offset")
        return cls(
            packed=tensors["packed"], absmax=tensors["absmax"], shape=tuple(info["shape"]),
            block_size=info["block_size"], dtype=_FLOAT_DTYPES[info["dtype"]],
            nested_absmax=tensors.get("nested_absmax"),
            nested_offset=None if offset is None else offset.reshape(()),
        )

    def to(self, device: torch.device | str) -> NF4State:
        """A copy of the state with every tensor on ``device``."""
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        return NF4State(move(self.packed), move(self.absmax), self.shape, self.block_size, self.dtype,
                        move(self.nested_absmax), move(self.nested_offset))


def nf4_bytes_per_param(numel: int, block_size: int = 64, double_quant: bool = True) -> float:
    """Analytic storage of ``NF4State.nbytes() / numel`` (`layout.nf4_bytes`, the format's one size
    formula); e.g. 0.5159 B (4.127 bits) at 64 + DQ."""
    return nf4_bytes(numel, block_size, double_quant) / numel


def _blockwise_absmax_codes(flat: torch.Tensor, block_size: int, code: torch.Tensor):
    """Absmax per block and nearest-code indices. flat: (n,) float32 -> ((n_blocks,), (n,) int32).

    The tail block is zero-padded, which changes neither its absmax nor its other codes. Scaling
    multiplies by the reciprocal of absmax (clamped so that an all-zero block maps to code 0.0),
    as the reference kernels do, so that rounding decisions agree bit for bit. (The reference
    divides in the partial tail block, and stores its absmax clamped to 1e-38; the results
    differ only for a value within one ulp of a midpoint, or in the stored scale of an all-zero
    tail block, which dequantizes to zeros either way.)
    """
    n = flat.numel()
    n_blocks = -(-n // block_size)
    blocks = torch.nn.functional.pad(flat, (0, n_blocks * block_size - n)).view(n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scaled = blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)  # (n_blocks, block_size)
    codes = torch.bucketize(scaled, midpoints(code.to(flat.device)), out_int32=True)
    return absmax, codes.view(-1)


def _nested_absmax_codes(centred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """8-bit dynamic-map codes of the centred absmax constants, blocks of 256.

    centred: (n_blocks,) -> (nested absmax (ceil(n_blocks / 256),), codes (n_blocks,) uint8).
    An all-zero nested block stores code 0 (it dequantizes to zero through its zero scale).
    """
    n = centred.numel()
    n_nested = -(-n // NESTED_BLOCK_SIZE)
    blocks = torch.nn.functional.pad(centred, (0, n_nested * NESTED_BLOCK_SIZE - n)).view(n_nested, -1)
    nested_absmax = blocks.abs().amax(dim=1)  # (n_nested,)
    inverse = torch.where(nested_absmax > 0, 1.0 / nested_absmax, torch.zeros_like(nested_absmax))
    normed = (blocks * inverse.unsqueeze(1)).clamp(-1.0, 1.0)  # (n_nested, 256)
    grid_index = ((normed + 1.0) * 0.5 * float(LOOKUP_BINS - 1) + 0.5).to(torch.int64)
    codes = _lookup_table_on(centred.device)[grid_index]
    codes = codes.masked_fill((nested_absmax == 0).unsqueeze(1), 0)
    return nested_absmax, codes.view(-1)[:n].to(torch.uint8)


@functools.lru_cache(maxsize=None)
def _lookup_table_on(device: torch.device) -> torch.Tensor:
    return rounding_lookup_table(dynamic_map()).to(device)


def quantize_nf4(weight: torch.Tensor, block_size: int = 64, double_quant: bool = True) -> NF4State:
    """Quantize any float tensor (flattened row-major) to NF4. Returns its ``NF4State``."""
    validate_block_size(block_size)
    if not weight.is_floating_point():
        raise TypeError(f"quantize_nf4 needs a floating-point tensor, got {weight.dtype}")
    flat = weight.detach().reshape(-1).float()  # (n,)
    n = flat.numel()
    if n == 0:
        raise ValueError("quantize_nf4 got an empty tensor")
    absmax, codes = _blockwise_absmax_codes(flat, block_size, torch.tensor(NF4_CODE))
    codes = codes[: n + n % 2].to(torch.uint8)  # an odd tail keeps one padded zero (code 7)
    packed = (codes[0::2] << 4) | codes[1::2]  # (ceil(n/2),)
    if not double_quant:
        return NF4State(packed, absmax, tuple(weight.shape), block_size, weight.dtype)
    offset = absmax.mean()
    nested_absmax, q_absmax = _nested_absmax_codes(absmax - offset)
    return NF4State(packed, q_absmax, tuple(weight.shape), block_size, weight.dtype, nested_absmax, offset)


def absmax_float32(state: NF4State) -> torch.Tensor:
    """The per-block scales as float32, (n_blocks,), decoding the nested level if present.

    Two roundings (scale, then add the offset), never a fused multiply-add, to stay bit-identical.
    """
    if not state.double_quant:
        return state.absmax.float()
    return block_scales(state.absmax, state.nested_absmax, state.nested_offset)


def dequantize_nf4(state: NF4State, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Rebuild the tensor, shape ``state.shape``, in ``dtype`` (computed in float32, then cast)."""
    values = torch.empty(state.numel, device=state.device)
    dequantize_into(values, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                    state.block_size, 0, state.numel)
    return values.view(state.shape).to(dtype)
