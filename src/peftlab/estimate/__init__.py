"""Analytic parameter, storage and training-memory estimates for every registered method.

Pure Python (no torch, no transformers) so it answers instantly for any model size:
`model_shape("llama-2-7b")` or `model_shape("path/config.json")` gives the architecture,
`estimate(model, "lora", r=16)` the trainable parameters by module type, adapter file size
and training memory (weights + gradients + optimizer + activations). What a method trains is
its declaration's `Footprint` (`peftlab.core.footprint`), read from the registry.
"""

from peftlab.core.shapes import LinearSpec, ModelShape
from peftlab.estimate.api import Estimate, Settings, estimate, footprint_of
from peftlab.estimate.memory import MEMORY_MODELS, PRECISIONS, Memory
from peftlab.estimate.presets import PRESETS, model_shape
from peftlab.quant.layout import nf4_bits_per_param, nf4_bytes

__all__ = ["Estimate", "LinearSpec", "MEMORY_MODELS", "Memory", "ModelShape", "PRECISIONS", "PRESETS",
           "Settings", "estimate", "footprint_of", "model_shape", "nf4_bits_per_param", "nf4_bytes"]
