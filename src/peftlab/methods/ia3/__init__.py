"""IA³: `config.py` declares it (torch-free), `layer.py` holds the scaling layers."""

from peftlab.methods.ia3.config import DECLARATION, IA3Config

__all__ = ["DECLARATION", "IA3Config"]
