"""NF4 storage arithmetic (QLoRA, Dettmers et al. 2023), as pure functions of block sizes.

A weight tensor of n values is split into blocks of `block_size`; each value becomes a 4-bit
code (two per byte) and each block keeps its absmax scale. Double quantization stores those
absmax values in 8 bits, with one fp32 scale per `double_quant_block_size` of them.
"""

from __future__ import annotations

from math import ceil


def nf4_bits_per_param(block_size: int = 64, double_quant: bool = True,
                       double_quant_block_size: int = 256) -> float:
    """Storage bits per weight: 4-bit codes + the per-block absmax scales.

    Without double quantization each block of `block_size` keeps an fp32 absmax:
    4 + 32/64 = 4.5 bits. With it the absmax is stored in 8 bits and each
    `double_quant_block_size` absmax values share one fp32 scale:
    4 + 8/64 + 32/(64·256) = 4.126953125 bits.
    """
    if not double_quant:
        return 4 + 32 / block_size
    return 4 + 8 / block_size + 32 / (block_size * double_quant_block_size)


def nf4_bytes(numel: int, block_size: int = 64, double_quant: bool = True,
              double_quant_block_size: int = 256) -> int:
    """Exact bytes of one NF4 tensor: packed codes, absmax, and (double quant) their scales
    plus the fp32 mean subtracted from the absmax values before they were quantized."""
    blocks = ceil(numel / block_size)
    codes = ceil(numel / 2)
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * ceil(blocks / double_quant_block_size) + 4
