"""The hot loops of NF4: dequantizing a range of a quantized tensor, and a fused dequantize-matvec.

Every weight value is ``NF4[code] * scale[block]`` (one float32 multiply), and with double
quantization ``scale = DYNAMIC[q] * nested_absmax[block // 256] + offset`` (two roundings, never
a fused multiply-add), so the two implementations below are bit-identical:

* **native** (CPU) — the C loops of ``native.py``, compiled on first use where a C compiler
  works: one pass over the codes, at most one parallel region per call. Each variant (output
  dtype, double quantization) is checked once against the eager kernel on its first call and
  used only if it agrees (bit for bit; the matvec to float32 rounding).
* **eager** — PyTorch tensor ops (a byte -> value-pair gather, an in-place scaling): the
  fallback on CPU, and the GPU path, where each op is a CUDA kernel and regions do not exist.

``PEFTLAB_NF4_KERNELS`` (read on every call): ``auto`` (default: native where it works),
``native`` (a failure to build or to agree is an error) or ``eager``.

On CPU every dequantized slab goes into a per-thread workspace reused from call to call
(`workspace`): a fresh multi-megabyte tensor per call costs a page fault per 4 KiB, which
measured as much as the dequantization itself for a 4096 x 4096 weight.

Ranges start on a multiple of `range_alignment` elements (a block, or 256 blocks with double
quantization), so a range's nested scales are a plain slice of the nested level.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable

import torch

from peftlab.quant import native
from peftlab.quant.codebook import NESTED_BLOCK_SIZE, NF4_CODE, dynamic_map

_MODES = ("auto", "native", "eager")
# A parallel region costs a wake-up of every thread, and on a shared machine a wait for the
# slowest; the native loop moves ~2 values per ns on one core, so it splits only when every
# thread gets at least this many values (~4 ms of work), else it runs on the calling thread alone.
_VALUES_PER_THREAD = 1 << 23
MATVEC_MAX_ROWS = native.MAX_ROWS


def kernel_mode() -> str:
    """``PEFTLAB_NF4_KERNELS``: "auto" (default), "native" or "eager"."""
    mode = os.environ.get("PEFTLAB_NF4_KERNELS", "auto")
    if mode not in _MODES:
        raise ValueError(f"PEFTLAB_NF4_KERNELS={mode!r} is not accepted: use one of {', '.join(_MODES)}")
    return mode


_verdicts: dict[tuple, bool] = {}  # (kernel, dtype, double quant) -> the native result agreed


def _native_for(key: tuple) -> native.NativeKernels | None:
    """The native library if `key`'s variant may use it (unknown yet, or known good), else None."""
    mode = kernel_mode()
    if mode == "eager" or _verdicts.get(key) is False:
        return None
    try:
        return native.load()
    except Exception as error:  # no compiler, a compiler that fails, an unloadable library
        _refuse(key, mode, error)
        return None


def _checked(key: tuple, result: torch.Tensor, eager: Callable[[], torch.Tensor],
             agree: Callable[[torch.Tensor, torch.Tensor], bool]) -> bool:
    """Whether the native `result` may be used: on `key`'s first call it must `agree` with `eager()`."""
    if key not in _verdicts:
        if not agree(result, eager()):
            _refuse(key, kernel_mode(), RuntimeError("its result differs from the eager kernel's"))
            return False
        _verdicts[key] = True
    return _verdicts[key]


def _refuse(key: tuple, mode: str, error: Exception) -> None:
    if mode == "native":
        raise error
    _verdicts[key] = False
    reason = (str(error).strip().splitlines() or [""])[0][:300]
    warnings.warn(f"peftlab NF4: the native {key[0]} kernel is not used for {key[1:]} ({type(error).__name__}: "
                  f"{reason}); the eager kernels are slower with several threads (PEFTLAB_NF4_KERNELS=eager "
                  "skips this attempt)", RuntimeWarning, stacklevel=4)


def _threads(kernels: native.NativeKernels, values: int) -> int:
    if kernels.single_thread:
        return 1
    return max(1, min(torch.get_num_threads(), values // _VALUES_PER_THREAD))


def block_scales(absmax: torch.Tensor, nested_absmax: torch.Tensor | None, nested_offset: torch.Tensor | None,
                 first_block: int = 0) -> torch.Tensor:
    """float32 scales of a range's blocks, (n_blocks,): absmax itself, or decoded from 8-bit codes.

    ``first_block``: index of ``absmax[0]`` counted from the start of ``nested_absmax``'s first
    nested block. Two roundings (scale, then add the offset), never a fused multiply-add.
    """
    if nested_absmax is None:
        return absmax
    block = torch.arange(absmax.shape[0], device=absmax.device) + first_block
    return _dynamic_on(absmax.device)[absmax.int()] * nested_absmax[block // NESTED_BLOCK_SIZE] + nested_offset


@functools.lru_cache(maxsize=None)
def _dynamic_on(device: torch.device) -> torch.Tensor:
    return dynamic_map().to(device)


@functools.lru_cache(maxsize=None)  # read-only, one per device: built once, not per call
def byte_pair_table(device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """(256,) int64 whose bits are the two float32 NF4 values of each byte (high nibble first).

    One 8-byte lookup per byte halves the index work and needs no nibble unpacking (in PyTorch,
    measured 2x faster than gathering rows of a (256, 2) float32 table); the C loops use it too.
    """
    code = torch.tensor(NF4_CODE, device=device)
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


def _scale_pointers(absmax: torch.Tensor, nested_absmax: torch.Tensor | None,
                    nested_offset: torch.Tensor | None) -> tuple[int | None, int | None, int | None, float]:
    """(codes, plain scales, nested scales, offset) as the C functions take them."""
    if nested_absmax is None:
        return None, absmax.data_ptr(), None, 0.0
    return absmax.data_ptr(), None, nested_absmax.data_ptr(), float(nested_offset)


def dequantize_into(out: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor,
                    nested_absmax: torch.Tensor | None, nested_offset: torch.Tensor | None,
                    block_size: int, start: int, stop: int) -> torch.Tensor:
    """Write elements [start, stop) of a quantized tensor into `out` ((stop - start,), any float dtype).

    packed, absmax, nested_absmax, nested_offset: the whole tensor's ``NF4State`` fields; ``start``
    is a multiple of ``range_alignment``. Whole blocks go through the native loop where it works
    (CPU, contiguous float32 or bfloat16 `out`), the rest (a partial last block) and everything
    else through the eager gather. Returns `out`.
    """
    first_block, full = start // block_size, (stop - start) // block_size
    absmax = absmax[first_block: first_block + -(-(stop - start) // block_size)]
    if nested_absmax is not None:
        nested_absmax = nested_absmax[first_block // NESTED_BLOCK_SIZE:]
    done = 0
    key = ("dequantize", out.dtype, nested_absmax is not None)
    if (full and out.device.type == "cpu" and out.dtype in (torch.float32, torch.bfloat16) and out.is_contiguous()
            and (kernels := _native_for(key)) is not None):
        blocks = packed[start // 2: start // 2 + full * block_size // 2]
        target = out[: full * block_size]
        kernels.dequantize(blocks.data_ptr(), *_scale_pointers(absmax, nested_absmax, nested_offset),
                           _dynamic_on(out.device).data_ptr(), byte_pair_table(out.device).data_ptr(), full,
                           block_size, target.data_ptr(), out.dtype == torch.bfloat16,
                           _threads(kernels, target.numel()))

        def eager() -> torch.Tensor:
            expected = torch.empty(target.numel())
            _dequantize_eager(expected, blocks, block_scales(absmax[:full], nested_absmax, nested_offset),
                              block_size, 0, target.numel())
            return expected.to(out.dtype)

        if _checked(key, target, eager, torch.equal):
            done = full * block_size
    if done < stop - start:
        scales = block_scales(absmax[done // block_size:], nested_absmax, nested_offset, first_block=done // block_size)
        _dequantize_eager(out[done:], packed, scales, block_size, start + done, stop)
    return out


def nf4_matvec(x: torch.Tensor, packed: torch.Tensor, absmax: torch.Tensor, nested_absmax: torch.Tensor | None,
               nested_offset: torch.Tensor | None, shape: tuple[int, int], block_size: int) -> torch.Tensor | None:
    """x @ dequant(W)^T for x (M, in) float32 on CPU, M <= MATVEC_MAX_ROWS -> (M, out); None without the
    native kernels. The weight is read as 4-bit codes and never written out (decoding a token).
    Rows of W must hold whole blocks (``in % block_size == 0``)."""
    key = ("matvec", x.dtype, nested_absmax is not None)
    kernels = _native_for(key)
    if kernels is None:
        return None
    out_features, in_features = shape
    x = x.contiguous()
    y = torch.empty(x.shape[0], out_features)
    kernels.matvec(x.data_ptr(), x.shape[0], packed.data_ptr(), *_scale_pointers(absmax, nested_absmax, nested_offset),
                   _dynamic_on(x.device).data_ptr(), byte_pair_table(x.device).data_ptr(), out_features, in_features,
                   block_size, y.data_ptr(), _threads(kernels, out_features * in_features))

    def eager() -> torch.Tensor:
        weight = torch.empty(out_features * in_features)
        _dequantize_eager(weight, packed, block_scales(absmax, nested_absmax, nested_offset), block_size, 0,
                          weight.numel())
        return x @ weight.view(shape).t()

    def agree(result: torch.Tensor, expected: torch.Tensor) -> bool:  # float32 summation order differs
        return torch.allclose(result, expected, rtol=1e-4, atol=1e-5 * max(1.0, expected.abs().max().item()))

    return y if _checked(key, y, eager, agree) else None


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
