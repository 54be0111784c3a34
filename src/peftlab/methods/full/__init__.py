"""Full fine-tuning: `config.py` declares it (torch-free), `layer.py` applies it."""

from peftlab.methods.full.config import DECLARATION, FullConfig

__all__ = ["DECLARATION", "FullConfig"]
