"""peftlab: parameter-efficient fine-tuning, implemented from scratch on PyTorch."""

__version__ = "0.1.0"
