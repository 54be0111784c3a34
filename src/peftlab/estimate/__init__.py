"""Analytic parameter, storage and training-memory estimates for PEFT methods.

Pure Python (no torch, no transformers) so it answers instantly for any model size:
`model_shape("llama-2-7b")` or `model_shape("path/config.json")` gives the architecture,
`estimate(model, "lora", r=16)` the trainable parameters by module type, adapter file size
and training memory (weights + gradients + optimizer + activations).
"""

from peftlab.estimate.api import Estimate, Settings, estimate
from peftlab.estimate.memory import MEMORY_MODELS, PRECISIONS, Memory
from peftlab.estimate.methods import METHODS, make_method
from peftlab.estimate.nf4 import nf4_bits_per_param, nf4_bytes
from peftlab.estimate.presets import PRESETS, model_shape
from peftlab.estimate.shapes import LinearSpec, ModelShape

__all__ = ["Estimate", "LinearSpec", "MEMORY_MODELS", "METHODS", "Memory", "ModelShape",
           "PRECISIONS", "PRESETS", "Settings", "estimate", "make_method", "model_shape",
           "nf4_bits_per_param", "nf4_bytes"]
