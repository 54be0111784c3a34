"""Loading real models (packaged, local HF folders, GGUF files) and describing their structure.

    loaded = load_model("minilm", "classification", num_labels=2)
    loaded.model, loaded.tokenizer
    transformer_layers(loaded.model)   # the ModuleList of blocks
"""

from peftlab.models.architecture import (
    LAYER_PATHS,
    ArchitectureError,
    head_dim,
    hidden_size,
    num_attention_heads,
    num_kv_heads,
    num_layers,
    output_head_names,
    transformer_layers,
)
from peftlab.models.base import load_base
from peftlab.models.loading import (
    KNOWN_MODELS,
    LoadedModel,
    ModelNotFoundError,
    cache_dir,
    load_model,
    resolve_model_folder,
)

__all__ = [
    "LAYER_PATHS", "ArchitectureError", "head_dim", "hidden_size", "num_attention_heads",
    "num_kv_heads", "num_layers", "output_head_names", "transformer_layers",
    "KNOWN_MODELS", "LoadedModel", "load_base", "ModelNotFoundError", "cache_dir", "load_model",
    "resolve_model_folder",
]
