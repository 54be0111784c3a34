"""DoRA: `config.py` declares it (torch-free), `layer.py` holds the weight-decomposed LoRA layer."""

from peftlab.methods.dora.config import DECLARATION, DoraConfig

__all__ = ["DECLARATION", "DoraConfig"]
