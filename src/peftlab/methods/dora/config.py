"""DoRA's declaration (torch-free): LoRA's config, its count plus one magnitude per output.

DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation", ICML, arXiv:2402.09353)
splits each adapted weight into a magnitude and a direction and trains the magnitude vector m
directly and the direction through LoRA; the modules are in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import kept_layers
from peftlab.methods.lora.config import LoraConfig, LoraFootprint


@dataclass(frozen=True)
class DoraConfig(LoraConfig):
    """LoRA's fields (see `LoraConfig`); DoRA adds a trained magnitude per output of each target.
    Targets must be float linear layers (nn.Linear or GPT-2's Conv1D)."""

    method: ClassVar[str] = "dora"


@dataclass(frozen=True)
class DoraFootprint(LoraFootprint):
    """LoRA's r·(in + out) per target plus its magnitude vector m (out)."""

    config: DoraConfig

    def breakdown(self, shape, num_labels):
        out = super().breakdown(shape, num_labels)
        out["dora magnitude"] = sum(m.out_features for m in self.targets(shape)) * kept_layers(self.config.layers,
                                                                                                 shape)
        return out

    def extra_activations(self, shape):
        # The magnitude's gradient needs the base output W x and the LoRA output s·BAx (out each).
        outputs = sum(m.out_features for m in self.targets(shape))
        return {**super().extra_activations(shape), "dora W·x and s·BA·x": 2 * outputs}


DECLARATION = MethodDeclaration(
    name="dora", config_class=DoraConfig, label="DoRA",
    capabilities=Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True),
    implementation="peftlab.methods.dora.layer:Dora", footprint=DoraFootprint,
    literature=Literature(1e-3, {"r": 16, "alpha": 32.0, "dropout": 0.1},
                          "DoRA (Liu et al. 2024): LoRA's rank, α and targets with the magnitude added; "
                          "lr as LoRA's", sweep=(5e-4, 1e-3, 2e-3)),
    paper="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation, ICML, arXiv:2402.09353",
    hf_peft_type="LORA", hf_file_fields={"use_dora": True},
    choose=Path(__file__).with_name("choose.json"),
)
