"""The constants of NF4 quantization, kept in one place, and the generators they come from.

* ``NF4_CODE`` — the 16 values of 4-bit NormalFloat (QLoRA, Dettmers et al. 2023, §3 and
  appendix E), stored as published; ``nf4_code_from_quantiles`` regenerates them and a test
  holds the two equal.
* ``dynamic_map`` — the signed 8-bit "dynamic" map (Dettmers 2016, *8-bit approximations for
  parallelism in deep learning*) that double quantization uses for the absmax constants; it is
  generated, not stored, because 256 literals would be a second copy of the same construction;
  the bitsandbytes oracle test holds it bit-identical to the reference map.
* Block sizes (accepted, default, nested) are in ``layout.py`` with the storage size formula.
"""

from __future__ import annotations

import torch

# The block sizes belong to the storage layout (`layout.py`, torch-free, read by the estimator);
# they are imported here for the quantizer's modules.
from peftlab.quant.layout import BLOCK_SIZES, DEFAULT_BLOCK_SIZE, NESTED_BLOCK_SIZE  # noqa: F401

# Sorted ascending: index 7 is the exact zero, index 15 is +1.0, index 0 is -1.0.
NF4_CODE: tuple[float, ...] = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)
NF4_ZERO_INDEX = 7

# The outermost quantile probability: the midpoint of 1 - 1/(2*15) and 1 - 1/(2*16), so that
# the extreme code is neither infinite nor clipped by a one-sided grid. The published table
# was generated with this value rounded to 0.9677083, and probabilities spaced in float32.
NF4_QUANTILE_OFFSET = 0.9677083


def nf4_code_from_quantiles() -> torch.Tensor:
    """Regenerate NF4: 8 positive and 7 negative normal quantiles plus an exact zero.

    The two halves are asymmetric on purpose: a symmetric 4-bit code has no exact zero, so
    QLoRA spends 8 levels on the positive side and 7 on the negative side, both reaching
    |x| = 1 after normalising by the largest quantile. Returns a sorted (16,) float32 tensor.
    """
    normal_ppf = torch.special.ndtri
    positive = normal_ppf(torch.linspace(NF4_QUANTILE_OFFSET, 0.5, 9)[:-1].double())  # (8,)
    negative = -normal_ppf(torch.linspace(NF4_QUANTILE_OFFSET, 0.5, 8)[:-1].double())  # (7,)
    values = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).float()
    values = values.sort().values
    return values / values.max()


def dynamic_map() -> torch.Tensor:
    """The signed 8-bit dynamic map: 256 sorted float32 values in [-0.993, 1].

    Exponent ``e`` in 0..6 owns 2**e fraction levels per sign: the midpoints of ``2**e + 1``
    points spaced evenly over [0.1, 1], scaled by 10**(e - 6). Small magnitudes therefore get
    fine steps (relative precision is what matters for absmax constants). The map also holds
    0 and +1; there is no -1. Arithmetic mirrors the reference construction (float32 grid,
    midpoints and scaling) so every value is bit-identical to it.
    """
    values = [torch.tensor([0.0, 1.0])]
    for exponent in range(7):
        grid = torch.linspace(0.1, 1.0, 2**exponent + 1, dtype=torch.float32)
        means = (grid[:-1] + grid[1:]) / 2.0
        scale = 10.0 ** (exponent - 6)
        # float32 tensor times a Python scale, the negative side scaled by -scale: the exact
        # operations of the reference, which round differently from negating the positives.
        values += [scale * means, -scale * means]
    return torch.cat(values).sort().values  # (256,)


def midpoints(code: torch.Tensor) -> torch.Tensor:
    """Decision boundaries of nearest-value rounding for a sorted code: (K,) -> (K-1,)."""
    return (code[:-1] + code[1:]) / 2


LOOKUP_BINS = 65536  # resolution of the 8-bit level's rounding grid over [-1, 1]


def rounding_lookup_table(code: torch.Tensor, bins: int = LOOKUP_BINS) -> torch.Tensor:
    """(bins,) int64: the code index chosen for each point of an even grid over [-1, 1].

    The 8-bit level of double quantization rounds through this table (grid point, then code)
    instead of searching the code: O(1) per value, and the rounding bitsandbytes' CPU kernel
    applies, so nested codes are bit-identical to it. Grid point i is -1 + 2i / (bins - 1) in
    float32; its code is the first whose upper midpoint is not below it.
    """
    grid = -1.0 + (2.0 * torch.arange(bins, dtype=torch.float32)) / float(bins - 1)
    return torch.searchsorted(midpoints(code.float()), grid, side="left")
