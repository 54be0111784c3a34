"""The NF4 storage layout as numbers (torch-free): block sizes and the bytes a tensor takes.

One source for the size of the format: `NF4State.nbytes()` is what the quantizer stores, and
`nf4_bytes` is the same count from the shape alone, which the estimator and QLoRA's declaration
use without importing torch (a test holds the two equal). A tensor of n values stores

    packed codes   ceil(n / 2) bytes                      two 4-bit codes per byte
    absmax         4 · ceil(n / block_size)               one float32 scale per block
      or, double-quantized:
    absmax codes   ceil(n / block_size)                   one uint8 per block
    nested absmax  4 · ceil(n_blocks / NESTED_BLOCK_SIZE) one float32 per 256 block scales
    nested offset  4                                      the mean subtracted before quantizing them
"""

from __future__ import annotations

from math import ceil

BLOCK_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048, 4096)
DEFAULT_BLOCK_SIZE = 64
NESTED_BLOCK_SIZE = 256  # double quantization: one float32 absmax per 256 first-level absmax


def nf4_bytes(numel: int, block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True) -> int:
    """Exact bytes of one NF4 tensor of `numel` values (see the module docstring)."""
    blocks = ceil(numel / block_size)
    codes = ceil(numel / 2)
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * ceil(blocks / NESTED_BLOCK_SIZE) + 4


def nf4_bits_per_param(block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True) -> float:
    """Storage bits per weight of a large tensor: 4-bit codes + the per-block scales.

    4 + 32/64 = 4.5 bits without double quantization; 4 + 8/64 + 32/(64·256) = 4.126953125 bits
    with it (the nested offset's 4 bytes per tensor vanish per parameter).
    """
    if not double_quant:
        return 4 + 32 / block_size
    return 4 + 8 / block_size + 32 / (block_size * NESTED_BLOCK_SIZE)
