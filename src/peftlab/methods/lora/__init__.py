"""LoRA: `config.py` declares it (torch-free), `layer.py` holds the modules, `combine.py` the
weighted combination of LoRA adapters."""

from peftlab.methods.lora.config import DECLARATION, LoraConfig

__all__ = ["DECLARATION", "LoraConfig"]
