"""OLoRA's declaration (torch-free): LoRA started from the QR decomposition of W.

OLoRA (Büyükakyüz 2024, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models",
arXiv:2406.01775) initialises B with the first r columns of Q and A with the first r rows of R
(W = Q R) and freezes the residual, like PiSSA but from a QR decomposition (`layer.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from peftlab.core.declaration import Literature, MethodDeclaration
from peftlab.methods.lora.config import LoraConfig, LoraFootprint
from peftlab.methods.pissa.config import RESIDUAL_CAPABILITIES


@dataclass(frozen=True)
class OloraConfig(LoraConfig):
    """LoRA's fields (see `LoraConfig`); `init` is "olora": A = R[:r], B = Q[:, :r] with W = Q R.
    Targets are float linear layers."""

    method: ClassVar[str] = "olora"
    init: Literal["olora"] = "olora"


DECLARATION = MethodDeclaration(
    name="olora", config_class=OloraConfig, label="OLoRA", capabilities=RESIDUAL_CAPABILITIES,
    implementation="peftlab.methods.olora.layer:Olora", footprint=LoraFootprint,
    literature=Literature(5e-4, {"r": 16, "alpha": 16.0, "dropout": 0.0},
                          "OLoRA (Büyükakyüz 2024) at LoRA's rank, α = r, no dropout; half LoRA's rate, as "
                          "starts taken from W prefer lower rates (Lee et al. 2026, arXiv:2602.04998)",
                          sweep=(2e-4, 5e-4, 1e-3)),
    paper="Büyükakyüz 2024, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models, arXiv:2406.01775",
    hf_peft_type="LORA", hf_file_fields={"init_lora_weights": "olora"},
    choose=Path(__file__).with_name("choose.json"),
    variant_of="lora",
)
