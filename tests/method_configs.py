"""One small test configuration per registered method, used by the conformance suite.

Each entry maps a method name to a function (architecture, task) -> config. Every method in the
registry must have an entry here: the suite fails for a method that has none.
"""

from __future__ import annotations

import peftlab
from peftlab.methods.adapters import AdapterConfig
from peftlab.methods.dora import DoraConfig
from peftlab.methods.full import FullConfig
from peftlab.methods.ia3 import IA3Config
from peftlab.methods.lora import LoraConfig
from peftlab.methods.loraplus import LoraPlusConfig
from peftlab.methods.olora import OloraConfig
from peftlab.methods.pissa import PissaConfig
from peftlab.methods.prefix import PrefixTuningConfig
from peftlab.methods.prompt import PromptTuningConfig
from peftlab.methods.qlora import QLoraConfig

# Targets that exercise every module kind LoRA wraps: separate Linear (BERT), fused Conv1D (GPT-2),
# GQA projections (LLaMA), an MLP projection, and the token embedding.
_LORA_TARGETS = {
    "bert": ("query", "value", "intermediate.dense", "word_embeddings"),
    "roberta": ("query", "value", "intermediate.dense", "word_embeddings"),
    "distilbert": ("q_lin", "v_lin", "lin1", "word_embeddings"),
    "gpt2": ("c_attn", "mlp.c_proj", "wte"),
    "llama": ("q_proj", "k_proj", "down_proj", "embed_tokens"),
    "mistral": ("q_proj", "k_proj", "down_proj", "embed_tokens"),
    "qwen2": ("q_proj", "k_proj", "down_proj", "embed_tokens"),
}

METHOD_CONFIGS = {
    "full": lambda arch, task: FullConfig(),
    "lora": lambda arch, task: LoraConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch]),
    # The architecture defaults: keys, values (GPT-2: k/v slices of the fused c_attn), FFN input.
    "ia3": lambda arch, task: IA3Config(),
    "adapters": lambda arch, task: AdapterConfig(bottleneck_size=4, activation="gelu"),
    "prompt": lambda arch, task: PromptTuningConfig(num_virtual_tokens=3, init="vocab"),
    # The reparameterisation MLP trains; files hold the folded prefix (the round trip checks both).
    "prefix": lambda arch, task: PrefixTuningConfig(num_virtual_tokens=3, projection=arch == "llama"),
    # LoRA's targets on a base whose block linears are NF4 (the embedding stays float).
    "qlora": lambda arch, task: QLoraConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch], block_size=32),
    # DoRA wraps float linears: LoRA's targets without the embedding.
    "dora": lambda arch, task: DoraConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch][:-1]),
    "loraplus": lambda arch, task: LoraPlusConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch], lr_ratio=8.0),
    # Starts taken from W need its float weight: LoRA's targets without the embedding.
    "pissa": lambda arch, task: PissaConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch][:-1]),
    "olora": lambda arch, task: OloraConfig(r=4, alpha=8, target_modules=_LORA_TARGETS[arch][:-1]),
}


def config_for(method: str, arch: str, task: str) -> peftlab.core.MethodConfig:
    if method not in METHOD_CONFIGS:
        raise AssertionError(f"method {method!r} is registered but has no test config in tests/method_configs.py")
    return METHOD_CONFIGS[method](arch, task)
