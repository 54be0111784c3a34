"""Full fine-tuning's declaration (torch-free): the baseline every PEFT method is measured against.

Every base parameter trains, so there is no separate delta: the learned change lives in the base
weights, merging has nothing to fold (`separate_delta=False`), and the base model cannot be
recovered by disabling (`supports_disable=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import MethodConfig
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """Full fine-tuning has no hyperparameters of its own; the head trains as a base parameter."""

    method: ClassVar[str] = "full"
    modules_to_save: tuple[str, ...] | None = ()


@dataclass(frozen=True)
class FullFootprint(Footprint):
    """Every parameter trains, so every linear input is kept for backward."""

    config: FullConfig

    def breakdown(self, shape, num_labels):
        if shape.total_override is not None:
            return {"all parameters": shape.total_override}
        groups = shape.groups(num_labels)
        groups.pop("head", None)  # the estimate adds the head row for every method
        return groups

    def saved_inputs(self, shape):
        return shape.layer_linears()

    def trained_base(self, breakdown):
        return sum(breakdown.values())

    def trains_base(self):
        return True


DECLARATION = MethodDeclaration(
    name="full", config_class=FullConfig, label="full fine-tuning",
    capabilities=Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True,
                              supports_disable=False, separate_delta=False),
    implementation="peftlab.methods.full.layer:Full", footprint=FullFootprint,
    literature=Literature(5e-5, {}, "BERT (Devlin et al. 2019) fine-tunes at 2e-5..5e-5", sweep=(2e-5, 5e-5, 1e-4)),
    paper="Devlin et al. 2019, BERT: Pre-training of Deep Bidirectional Transformers, arXiv:1810.04805",
    choose=Path(__file__).with_name("choose.json"),
)
