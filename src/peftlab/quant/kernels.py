"""The hot loops of NF4: dequantizing a range of a quantized tensor, and a fused dequantize-matvec.

Every weight value is ``NF4[code] * scale[block]`` (one float32 multiply), and with double
quantization ``scale = DYNAMIC[q] * nested_absmax[block // 256] + offset`` (two roundings, never
a fused multiply-add), so every implementation below is bit-identical to the others. Two of them:

* **compiled** — ``torch.compile`` fuses the scale decoding, the unpacking, the code-book lookup,
  the scaling and the cast to the compute dtype into one loop (C++/OpenMP on CPU, Triton on GPU):
  **one parallel region** per call. Used wherever a probe compiles both kernels and their results
  equal the eager ones (`compiled_kernels`): that needs a C++ compiler and the Python headers on
  CPU, Triton on a GPU. ``PEFTLAB_NF4_KERNELS=eager`` skips it, ``=compiled`` makes a failed
  probe an error instead of a warning.
* **eager** — the fallback and the reference: a byte -> value-pair gather (`byte_pair_table`) and
  an in-place scaling, about five parallel regions.

Why regions, not arithmetic: on CPU each PyTorch op with enough work is an OpenMP parallel region,
and on a machine shared with other jobs every region waits until all its threads have been
scheduled again. A 4-bit linear layer is only a few ops, so their number decides its speed there
(see BENCHMARKS.md, issue 20). For the same reason CPU slabs go into a per-thread workspace reused
from call to call (`workspace`): a fresh multi-megabyte tensor per call costs a page fault per
4 KiB, as much as the dequantization itself for a 4096 x 4096 weight.

Ranges handed to the kernels start on a boundary of `range_alignment` elements (a block, or 256
blocks with double quantization), so a range's nested scales are a plain slice of the nested level.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable

import torch

from peftlab.quant.codebook import NESTED_BLOCK_SIZE, NF4_CODE, dynamic_map

_MODES = ("auto", "compiled", "eager")


def block_scales(absmax: torch.Tensor, nested_absmax: torch.Tensor | None, nested_offset: torch.Tensor | None,
                 dynamic: torch.Tensor | None = None, first_block: int = 0) -> torch.Tensor:
    """float32 scales of a range's blocks, (n_blocks,): absmax itself, or decoded from 8-bit codes.

    ``dynamic``: the dynamic map on absmax's device (looked up when None); ``first_block``: index
    of ``absmax[0]`` counted from the start of ``nested_absmax``'s first nested block.
    """
    if nested_absmax is None:
        return absmax
    if dynamic is None:
        dynamic = _dynamic_on(absmax.device)
    block = torch.arange(absmax.shape[0], device=absmax.device) + first_block
    return dynamic[absmax.int()] * nested_absmax[block // NESTED_BLOCK_SIZE] + nested_offset


def _dequantize_blocks(packed: torch.Tensor, absmax: torch.Tensor, nested_absmax: torch.Tensor | None,
                       nested_offset: torch.Tensor | None, dynamic: torch.Tensor, code: torch.Tensor,
                       out: torch.Tensor) -> torch.Tensor:
    """out[b, j] = (NF4[packed[b, j] >> 4], NF4[packed[b, j] & 15]) * scale[b], in out's dtype.

    packed: (n_blocks, block/2) uint8; absmax: (n_blocks,) float32, or uint8 codes with the nested
    level; out: (n_blocks, block/2, 2). Compiled, this is one loop.
    """
    codes = packed.int()
    scale = block_scales(absmax, nested_absmax, nested_offset, dynamic).unsqueeze(1)  # (n_blocks, 1)
    return out.copy_(torch.stack([code[codes >> 4] * scale, code[codes & 15] * scale], dim=-1))


def _matvec(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, nested_absmax: torch.Tensor | None,
            nested_offset: torch.Tensor | None, dynamic: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """x @ dequant(W)^T without forming W: x (M, in) -> (M, out), for a few rows of x.

    packed: (out, n_blocks_per_row, block/2) uint8; absmax: (out * n_blocks_per_row,). Each block's
    dot product is summed first and scaled once: equal to dequantize-then-matmul up to float32
    summation order. Compiled, it reads the 4-bit codes once and writes nothing but the result.
    """
    out_features, blocks_per_row = packed.shape[:2]
    codes = packed.int()
    pairs = x.view(x.shape[0], 1, blocks_per_row, -1, 2)  # (M, 1, blocks_per_row, block/2, 2)
    partial = (code[codes >> 4] * pairs[..., 0] + code[codes & 15] * pairs[..., 1]).sum(-1)  # (M, out, bpr)
    scales = block_scales(absmax, nested_absmax, nested_offset, dynamic).view(out_features, blocks_per_row)
    return (partial * scales).sum(-1)


def kernel_mode() -> str:
    """``PEFTLAB_NF4_KERNELS``: "auto" (default), "compiled" or "eager"; read on every call."""
    mode = os.environ.get("PEFTLAB_NF4_KERNELS", "auto")
    if mode not in _MODES:
        raise ValueError(f"PEFTLAB_NF4_KERNELS={mode!r} is not accepted: use one of {', '.join(_MODES)}")
    return mode


_compiled: dict[str, Callable] = {}
_verdicts: dict[tuple, bool] = {}  # (kernel, device type, dtype, double quant) -> compiled result is good


def _run_compiled(key: tuple, function: Callable, args: tuple, eager: Callable[[], torch.Tensor],
                  agree: Callable[[torch.Tensor, torch.Tensor], bool]) -> torch.Tensor | None:
    """``torch.compile(function)(*args)``, or None where the compiled kernels are not to be used.

    A kernel is compiled on first use (dynamic shapes: one compilation serves every layer size) and
    checked once per `key` (what makes PyTorch compile anew): its result must `agree` with
    `eager()`'s. A variant that fails to compile (no C++ compiler or Python headers on CPU, no
    Triton on a GPU) or disagrees warns once and runs eagerly from then on.
    """
    mode = kernel_mode()
    if mode == "eager" or _verdicts.get(key) is False:
        return None
    with torch.no_grad():  # one grad mode, so one compiled variant, wherever the layer runs
        if key in _verdicts:
            return _compiled[function.__name__](*args)
        try:
            if function.__name__ not in _compiled:
                _compiled[function.__name__] = torch.compile(function, dynamic=True, fullgraph=True)
            result = _compiled[function.__name__](*args)
            if not agree(result, eager()):
                raise RuntimeError("its result differs from the eager kernel's")
        except Exception as error:  # any toolchain failure means: use the eager kernels
            if mode == "compiled":
                raise
            _verdicts[key] = False
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            warnings.warn(f"peftlab NF4: the compiled {function.__name__.strip('_')} kernel is not usable for "
                          f"{key[1:]} ({type(error).__name__}: {reason}); using the eager kernels, slower with "
                          "several threads (PEFTLAB_NF4_KERNELS=eager skips this attempt)",
                          RuntimeWarning, stacklevel=3)
            return None
    _verdicts[key] = True
    return result


@functools.lru_cache(maxsize=None)
def _code_on(device: torch.device) -> torch.Tensor:
    return torch.tensor(NF4_CODE, device=device)


@functools.lru_cache(maxsize=None)
def _dynamic_on(device: torch.device) -> torch.Tensor:
    return dynamic_map().to(device)


def kernel_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(dynamic map (256,), NF4 code book (16,)) on `device`: the kernels' last two arguments."""
    return _dynamic_on(device), _code_on(device)


@functools.lru_cache(maxsize=None)  # read-only, one per device: built once, not per call
def byte_pair_table(device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(256,) int64 whose bits are the two float32 NF4 values of each byte (high nibble first).

    The eager kernel's lookup: one 8-byte gather per byte halves the index work and needs no nibble
    unpacking (measured 2x faster than gathering rows of a (256, 2) float32 table).
    """
    code = _code_on(device)
    byte = torch.arange(256, device=device)
    pairs = torch.stack([code[byte >> 4], code[byte & 0xF]], dim=1)  # (256, 2) float32
    return pairs.view(torch.int64).view(256)


_workspaces = threading.local()


def workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (numel,) scratch tensor: reused on CPU (one per thread and dtype, grown as needed), fresh elsewhere.

    Accelerators keep freed memory in PyTorch's caching allocator, so a fresh tensor costs nothing
    there. The caller must be done with a workspace before asking for one of the same dtype again.
    """
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    buffers = _workspaces.__dict__.setdefault("buffers", {})
    if dtype not in buffers or buffers[dtype].numel() < numel:
        buffers[dtype] = torch.empty(numel, dtype=dtype)
    return buffers[dtype][:numel]


def range_alignment(block_size: int, double_quant: bool) -> int:
    """Elements a dequantized range must start on a multiple of: a block, or a nested block of blocks."""
    return block_size * (NESTED_BLOCK_SIZE if double_quant else 1)


def dequantize_into(out: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor,
                    nested_absmax: torch.Tensor | None, nested_offset: torch.Tensor | None,
                    block_size: int, start: int, stop: int) -> torch.Tensor:
    """Write elements [start, stop) of a quantized tensor into `out` ((stop - start,), any float dtype).

    packed, absmax, nested_absmax, nested_offset: the whole tensor's ``NF4State`` fields; ``start``
    is a multiple of ``range_alignment``. Whole blocks go through the compiled kernel where it
    works, the rest (a partial last block) and everything without it through the eager gather.
    Returns `out`.
    """
    first_block, full = start // block_size, (stop - start) // block_size
    absmax = absmax[first_block: first_block + -(-(stop - start) // block_size)]
    if nested_absmax is not None:
        nested_absmax = nested_absmax[first_block // NESTED_BLOCK_SIZE:]
    done = 0
    if full:
        blocks = (packed[start // 2: start // 2 + full * block_size // 2].view(full, -1), absmax[:full],
                  nested_absmax, nested_offset, *kernel_constants(out.device))
        target = out[: full * block_size]

        def eager() -> torch.Tensor:
            expected = torch.empty_like(target)
            _dequantize_eager(expected, blocks[0].view(-1), block_scales(*blocks[1:5]), block_size, 0, target.numel())
            return expected

        key = ("dequantize", out.device.type, out.dtype, nested_absmax is not None)
        if _run_compiled(key, _dequantize_blocks, (*blocks, target.view(full, -1, 2)), eager, _same_values) is not None:
            done = full * block_size
    if done < stop - start:
        scales = block_scales(absmax[done // block_size:], nested_absmax, nested_offset, first_block=done // block_size)
        _dequantize_eager(out[done:], packed, scales, block_size, start + done, stop)
    return out


def _same_values(result: torch.Tensor, expected: torch.Tensor) -> bool:
    return torch.equal(result.reshape(-1), expected.reshape(-1))


def nf4_matvec(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, nested_absmax: torch.Tensor | None,
               nested_offset: torch.Tensor | None, shape: tuple[int, int], block_size: int) -> torch.Tensor | None:
    """x @ dequant(W)^T, x: (M, in) float32 -> (M, out), by the compiled fused kernel; None without one.

    For a few rows of x (decoding): the weight is read as 4-bit codes and never written out.
    Rows of W must hold whole blocks (``in % block_size == 0``).
    """
    out_features, in_features = shape
    args = (x, packed.view(out_features, in_features // block_size, -1), absmax, nested_absmax, nested_offset,
            *kernel_constants(x.device))

    def eager() -> torch.Tensor:
        weight = torch.empty(out_features * in_features, device=x.device)
        _dequantize_eager(weight, packed, block_scales(absmax, nested_absmax, nested_offset), block_size, 0,
                          weight.numel())
        return x @ weight.view(shape).t()

    def agree(result: torch.Tensor, expected: torch.Tensor) -> bool:  # float32 summation order differs
        return torch.allclose(result, expected, rtol=1e-4, atol=1e-5 * max(1.0, expected.abs().max().item()))

    key = ("matvec", x.device.type, x.dtype, nested_absmax is not None)
    return _run_compiled(key, _matvec, args, eager, agree)


def _dequantize_eager(out: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, block_size: int,
                      start: int, stop: int) -> None:
    """Gather value pairs by byte, scale in place (scales: float32, one per block from `start`)."""
    length = stop - start
    n_pairs = (length + 1) // 2
    indices = workspace(n_pairs, torch.int32, out.device)
    indices.copy_(packed[start // 2: start // 2 + n_pairs])
    direct = out.dtype == torch.float32 and length % 2 == 0 and out.data_ptr() % 8 == 0
    pairs = out.view(torch.int64) if direct else workspace(n_pairs, torch.int64, out.device)
    torch.index_select(byte_pair_table(out.device), 0, indices, out=pairs)  # two float32 values per int64
    values = pairs.view(torch.float32)[:length]  # (length,)
    full = length // block_size
    values[: full * block_size].view(full, block_size).mul_(scales[:full].unsqueeze(1))
    if full * block_size < length:
        values[full * block_size:].mul_(scales[full])
    if not direct:
        out.copy_(values)
