"""peftlab: parameter-efficient fine-tuning, implemented from scratch on PyTorch.

    import peftlab
    model = peftlab.apply(base_model, peftlab.LoraConfig(r=16, alpha=32))
    ...train model.trainable_parameters()...
    peftlab.save_adapter(model, "my-adapter")
    model = peftlab.load_adapter(fresh_base_model, "my-adapter")

The names below load on first use (PEP 562), so `import peftlab.estimate` and the CLI's pure
Python commands start without importing torch.
"""

from __future__ import annotations

from peftlab.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "PeftModel": "peftlab.core.model",
    "get_method": "peftlab.core.registry",
    "method_names": "peftlab.core.registry",
    "make_config": "peftlab.core.combination_config",
    "CombinationConfig": "peftlab.core.combination_config",
    "Component": "peftlab.core.combination_config",
    "load_adapter": "peftlab.core.adapter_io",
    "save_adapter": "peftlab.core.adapter_io",
    "combine_loras": "peftlab.methods.lora.combine",
    "FullConfig": "peftlab.methods.full",
    "LoraConfig": "peftlab.methods.lora",
    "QLoraConfig": "peftlab.methods.qlora",
    "IA3Config": "peftlab.methods.ia3",
    "AdapterConfig": "peftlab.methods.adapters",
    "PrefixTuningConfig": "peftlab.methods.prefix",
    "PromptTuningConfig": "peftlab.methods.prompt",
    "errors": "peftlab.errors",
    "core": "peftlab.core",
}

__all__ = ["apply", *_EXPORTS]


__getattr__ = lazy_exports(__name__, _EXPORTS)


def apply(model, config, adapter_name: str = "default"):
    """Attach a new adapter configured by `config` to `model` (a base model or a PeftModel).

    A `CombinationConfig` (e.g. `make_config("lora+prompt")`) attaches all its components as one
    unit named `adapter_name`, every part active.
    """
    from peftlab.core.model import PeftModel

    peft_model = model if isinstance(model, PeftModel) else PeftModel(model)
    peft_model.add_adapter(adapter_name, config)
    return peft_model
