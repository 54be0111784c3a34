"""Bottleneck adapters: `config.py` declares them (torch-free), `layer.py` holds the modules."""

from peftlab.methods.adapters.config import DECLARATION, AdapterConfig

__all__ = ["AdapterConfig", "DECLARATION"]
