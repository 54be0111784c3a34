"""peftlab: parameter-efficient fine-tuning, implemented from scratch on PyTorch.

    import peftlab
    model = peftlab.apply(base_model, peftlab.LoraConfig(r=16, alpha=32))
    ...train model.trainable_parameters()...
    peftlab.save_adapter(model, "my-adapter")
    model = peftlab.load_adapter(fresh_base_model, "my-adapter")
"""

__version__ = "0.1.0"

from peftlab.core import (  # noqa: E402  (the version must exist before core imports it)
    PeftModel, get_method, load_adapter, make_config, method_names, save_adapter,
)
from peftlab.methods.full import FullConfig  # noqa: E402
from peftlab.methods.lora import LoraConfig  # noqa: E402


def apply(model, config, adapter_name: str = "default") -> PeftModel:
    """Attach a new adapter configured by `config` to `model` (a base model or a PeftModel)."""
    peft_model = model if isinstance(model, PeftModel) else PeftModel(model)
    peft_model.add_adapter(adapter_name, config)
    return peft_model


__all__ = [
    "FullConfig", "LoraConfig", "PeftModel", "apply", "get_method", "load_adapter",
    "make_config", "method_names", "save_adapter",
]
