"""LoRA+: `config.py` declares it (torch-free), `layer.py` its optimizer grouping."""

from peftlab.methods.loraplus.config import DECLARATION, LoraPlusConfig

__all__ = ["DECLARATION", "LoraPlusConfig"]
