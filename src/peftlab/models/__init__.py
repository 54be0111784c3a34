"""Loading real models (packaged, local HF folders, GGUF files) and describing their structure.

    loaded = load_model("minilm", "classification", num_labels=2)
    loaded.model, loaded.tokenizer
    transformer_layers(loaded.model)   # the ModuleList of blocks
"""

from peftlab.models.loading import (
    KNOWN_MODELS,
    LoadedModel,
    ModelNotFoundError,
    cache_dir,
    load_model,
    resolve_model_folder,
)

__all__ = [
    "KNOWN_MODELS", "LoadedModel", "ModelNotFoundError", "cache_dir", "load_model",
    "resolve_model_folder",
]
