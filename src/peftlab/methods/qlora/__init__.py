"""QLoRA: `config.py` declares it (torch-free), `layer.py` applies it and exports merged models."""

from peftlab.methods.qlora.config import DECLARATION, QLoraConfig

__all__ = ["DECLARATION", "QLoraConfig"]
