"""Prefix tuning's declaration (torch-free): config, analytic count, literature defaults.

Li & Liang 2021 (arXiv:2101.00190): n trained keys and values in front of the real ones at every
attention layer; the hook is in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import Annotated, MethodConfig, Range
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint


@dataclass(frozen=True)
class PrefixTuningConfig(MethodConfig):
    """num_virtual_tokens: prefix length n. projection: train through the MLP reparameterisation.
    encoder_hidden_size: the MLP's hidden width h (None: the model's hidden size)."""

    method: ClassVar[str] = "prefix"
    num_virtual_tokens: Annotated[int, Range(ge=1, le=4096)] = 20
    projection: bool = False
    encoder_hidden_size: Annotated[int, Range(ge=1)] | None = None


@dataclass(frozen=True)
class PrefixFootprint(Footprint):
    """n·2·kv per block; projection=True trains instead an n×d embedding and the MLP
    Linear(d, h)+bias, Linear(h, 2·L·kv)+bias that produces those prefixes."""

    config: PrefixTuningConfig

    def prefix_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def breakdown(self, shape, num_labels):
        n, d, width = self.config.num_virtual_tokens, shape.hidden, 2 * shape.layers * shape.kv_dim
        if not self.config.projection:
            return {"prefix keys+values": n * width}
        h = self.config.encoder_hidden_size or d
        return {"prefix embedding": n * d, "projection mlp": d * h + h + h * width + width}

    def notes(self, shape):
        if not self.config.projection:
            return ()
        folded = self.config.num_virtual_tokens * 2 * shape.layers * shape.kv_dim
        return (f"the projection MLP trains, then folds into n·2·L·kv = {folded:,} prefix "
                f"parameters for inference",)


DECLARATION = MethodDeclaration(
    name="prefix", config_class=PrefixTuningConfig, label="prefix tuning",
    capabilities=Capabilities(mergeable=False, exact_unmerge=False, identity_at_init=False, model_hook=True),
    implementation="peftlab.methods.prefix.layer:PrefixTuning", footprint=PrefixFootprint,
    literature=Literature(1e-2, {"num_virtual_tokens": 20, "projection": True},
                          "Prefix tuning (Li & Liang 2021) with the MLP reparametrisation; "
                          "P-tuning v2 uses ~1e-2 for classification", sweep=(1e-3, 3e-3, 1e-2)),
    paper="Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation, arXiv:2101.00190",
    hf_peft_type="PREFIX_TUNING", needs=("kv_cache",),
    choose=Path(__file__).with_name("choose.json"),
)
