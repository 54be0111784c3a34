"""NF4 quantization (QLoRA's 4-bit NormalFloat with double quantization) and a 4-bit linear layer.

Pure functions over a serialisable ``NF4State``; ``Linear4bit`` is the frozen base layer that
the ``qlora`` method wraps. See ``nf4.py`` for the storage format, ``layout.py`` for its size
(torch-free) and ``codebook.py`` for the constants and their generators.

Names load on first use (PEP 562), so ``peftlab.quant.layout`` imports without torch.
"""

from peftlab.lazy import lazy_exports

_EXPORTS = {
    "BLOCK_SIZES": "peftlab.quant.layout",
    "DEFAULT_BLOCK_SIZE": "peftlab.quant.layout",
    "NESTED_BLOCK_SIZE": "peftlab.quant.layout",
    "nf4_bytes": "peftlab.quant.layout",
    "NF4_CODE": "peftlab.quant.codebook",
    "Linear4bit": "peftlab.quant.linear4bit",
    "NF4State": "peftlab.quant.nf4",
    "absmax_float32": "peftlab.quant.nf4",
    "dequantize_nf4": "peftlab.quant.nf4",
    "nf4_bytes_per_param": "peftlab.quant.nf4",
    "quantize_nf4": "peftlab.quant.nf4",
    "validate_block_size": "peftlab.quant.nf4",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
