"""OLoRA: `config.py` declares it (torch-free), `layer.py` starts LoRA from the QR of W."""

from peftlab.methods.olora.config import DECLARATION, OloraConfig

__all__ = ["DECLARATION", "OloraConfig"]
