"""PiSSA: `config.py` declares it (torch-free), `layer.py` starts LoRA from the SVD of W."""

from peftlab.methods.pissa.config import DECLARATION, PissaConfig

__all__ = ["DECLARATION", "PissaConfig"]
