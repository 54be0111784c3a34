"""PiSSA's declaration (torch-free): LoRA started from the principal singular vectors of W.

PiSSA (Meng, Wang & Zhang 2024, "PiSSA: Principal Singular Values and Singular Vectors Adaptation
of Large Language Models", arXiv:2404.02948) initialises B A with the top-r singular triplets of W
and freezes the residual W − s·B A in their place, so training moves the principal part of W
instead of a zero-initialised update; `layer.py` does it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.methods.lora.config import LoraConfig, LoraFootprint

# The residual replaces the base weight: the output equals the base's at init (to float rounding),
# but switching the adapter off leaves the residual model, not the base one.
RESIDUAL_CAPABILITIES = Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True,
                                     supports_disable=False)


@dataclass(frozen=True)
class PissaConfig(LoraConfig):
    """LoRA's fields (see `LoraConfig`); `init` is "pissa": A = √(S_r/s) V_rᵀ, B = U_r √(S_r/s) from
    the full SVD of each target's weight. Targets are float linear layers."""

    method: ClassVar[str] = "pissa"
    init: Literal["pissa"] = "pissa"


DECLARATION = MethodDeclaration(
    name="pissa", config_class=PissaConfig, label="PiSSA", capabilities=RESIDUAL_CAPABILITIES,
    implementation="peftlab.methods.pissa.layer:Pissa", footprint=LoraFootprint,
    literature=Literature(5e-4, {"r": 16, "alpha": 16.0, "dropout": 0.0},
                          "PiSSA (Meng et al. 2024) at LoRA's rank, α = r (s = 1: the factors are √S_r), no "
                          "dropout; half LoRA's rate, as principal starts prefer lower rates (Lee et al. 2026, "
                          "arXiv:2602.04998)", sweep=(2e-4, 5e-4, 1e-3)),
    paper="Meng, Wang & Zhang 2024, PiSSA: Principal Singular Values and Singular Vectors Adaptation of "
          "Large Language Models, arXiv:2404.02948",
    hf_peft_type="LORA", hf_file_fields={"init_lora_weights": "pissa"},
    choose=Path(__file__).with_name("choose.json"),
    variant_of="lora",
)
