"""LoRA's declaration (torch-free): config, default targets, analytic count, literature defaults.

LoRA (Hu et al., 2021, arXiv:2106.09685) adds s·B·A to a frozen weight W (out × in), with
A: (r × in), B: (out × r), s = α / r (rsLoRA: α / √r). The modules are in `layer.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import Annotated, Literal, MethodConfig, Range
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint, bias_params, kept_layers, labels
from peftlab.core.shapes import LinearSpec, ModelShape

# Targets when the config names none: the attention query and value projections (the LoRA
# paper's choice and the source documents' "start with Q+V"), as roles of the architecture table.
DEFAULT_ROLES = ("q", "v")


@dataclass(frozen=True)
class LoraConfig(MethodConfig):
    """LoRA hyperparameters.

    r: rank (1..4096). alpha: scale numerator (s = alpha / r, or alpha / sqrt(r) with use_rslora).
    dropout: on the adapter's input, in [0, 1). target_modules / exclude_modules / layers: see
    `peftlab.core.targets` (None = the architecture's query and value projections).
    bias: "none" | "all" (every bias trains) | "lora_only" (biases of adapted layers train).
    init: "kaiming" (A Kaiming-uniform) | "gaussian" (A ~ N(0, 1/r)); B is zero either way.
    """

    method: ClassVar[str] = "lora"
    r: Annotated[int, Range(ge=1, le=4096)] = 8
    alpha: Annotated[float, Range(gt=0)] = 16.0
    dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
    target_modules: str | tuple[str, ...] | None = None
    exclude_modules: str | tuple[str, ...] | None = None
    layers: tuple[Annotated[int, Range(ge=0)], ...] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    init: Literal["kaiming", "gaussian"] = "kaiming"

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


@dataclass(frozen=True)
class LoraFootprint(Footprint):
    """r·(in + out) per targeted block linear (A: r×in, B: out×r); bias none|all|lora_only."""

    config: LoraConfig

    def targets(self, shape: ModelShape) -> tuple[LinearSpec, ...]:
        config = self.config
        names = config.target_modules if config.target_modules is not None else \
            shape.architecture.names(DEFAULT_ROLES)
        chosen = shape.match(names)
        excluded = shape.named(config.exclude_modules) if config.exclude_modules is not None else ()
        return tuple(m for m in chosen if m not in excluded)

    def breakdown(self, shape, num_labels):
        targets, layers = self.targets(shape), kept_layers(self.config.layers, shape)
        out = {label: self.config.r * (m.in_features + m.out_features) * layers
               for m, label in labels(targets, shape).items()}
        if self.config.bias == "all":
            out["bias"] = bias_params(shape, num_labels)
        elif self.config.bias == "lora_only":
            out["bias"] = sum(m.out_features for m in targets if m.bias) * layers
        return out

    def saved_inputs(self, shape):
        return self.targets(shape)

    def trained_base(self, breakdown):
        return breakdown.get("bias", 0)

    def extra_activations(self, shape):
        # A x (r per token) is the input of B and is kept for B's weight gradient. With dropout,
        # A's input is the dropped x, kept beside the dropout's mask (float noise on CPU): one more
        # input-sized tensor per target than the x that `saved_inputs` counts.
        targets = self.targets(shape)
        extra = {"lora A·x": self.config.r * len(targets)}
        if self.config.dropout > 0:
            extra["lora dropout mask"] = sum(m.in_features for m in targets)
        return extra


DECLARATION = MethodDeclaration(
    name="lora", config_class=LoraConfig, label="LoRA",
    capabilities=Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True),
    implementation="peftlab.methods.lora.layer:Lora", footprint=LoraFootprint,
    literature=Literature(1e-3, {"r": 16, "alpha": 32.0, "dropout": 0.1},
                          "LoRA (Hu et al. 2021): r=16, α=32 on the query/value projections, lr ~5e-4..1e-3",
                          sweep=(5e-4, 1e-3, 2e-3)),
    paper="Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685",
    hf_peft_type="LORA",
    choose=Path(__file__).with_name("choose.json"),
)
