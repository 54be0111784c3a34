"""Prompt tuning: `config.py` declares it (torch-free), `layer.py` holds the soft-prompt hook."""

from peftlab.methods.prompt.config import DECLARATION, PromptTuningConfig

__all__ = ["DECLARATION", "PromptTuningConfig"]
