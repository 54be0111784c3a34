"""Prefix tuning: `config.py` declares it (torch-free), `layer.py` holds the key/value hook."""

from peftlab.methods.prefix.config import DECLARATION, PrefixTuningConfig

__all__ = ["DECLARATION", "PrefixTuningConfig"]
