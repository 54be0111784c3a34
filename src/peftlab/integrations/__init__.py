"""Bridges to the tools people already train with.

    peftlab.integrations.transformers   a PeftModel inside transformers.Trainer / TRL's SFTTrainer

Each module imports its third-party library at import time, so import the one you use.
"""
