"""NF4 quantization (QLoRA's 4-bit NormalFloat with double quantization) and a 4-bit linear layer.

Pure functions over a serialisable ``NF4State``; ``Linear4bit`` is the frozen base layer that
the ``qlora`` method wraps. See ``nf4.py`` for the storage format and ``codebook.py`` for the
constants and their generators.
"""

from peftlab.quant.codebook import BLOCK_SIZES, DEFAULT_BLOCK_SIZE, NESTED_BLOCK_SIZE, NF4_CODE
from peftlab.quant.linear4bit import Linear4bit
from peftlab.quant.nf4 import (
    NF4State,
    absmax_float32,
    dequantize_nf4,
    nf4_bytes_per_param,
    quantize_nf4,
    validate_block_size,
)

__all__ = [
    "BLOCK_SIZES",
    "DEFAULT_BLOCK_SIZE",
    "NESTED_BLOCK_SIZE",
    "NF4_CODE",
    "Linear4bit",
    "NF4State",
    "absmax_float32",
    "dequantize_nf4",
    "nf4_bytes_per_param",
    "quantize_nf4",
    "validate_block_size",
]
