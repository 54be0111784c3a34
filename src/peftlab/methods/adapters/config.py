"""Bottleneck adapters' declaration (torch-free): config, placement as roles, count, literature.

Houlsby et al. 2019 (arXiv:1902.00751), Pfeiffer et al. 2021 (arXiv:2005.00247), the parallel
variant after He et al. 2022 (arXiv:2110.04366); the modules are in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import Annotated, ConfigError, Literal, MethodConfig, Range
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint

# Where the adapters sit, as roles of the architecture table: after the attention output
# projection (o) and after the FFN down projection (down).
PLACEMENTS = {"houlsby": ("o", "down"), "pfeiffer": ("down",)}
SITE_LABELS = {"o": "attention", "down": "ffn"}
DEFAULT_BOTTLENECK = 64


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Bottleneck adapter hyperparameters.

    bottleneck_size: m (1..65536); or reduction_factor: m = d // reduction_factor (> 0); give at
        most one (neither: m = 64).
    activation: σ, one of relu, gelu, silu (= swish), tanh, sigmoid, identity.
    placement: "houlsby" (after attention and FFN) | "pfeiffer" (after FFN).
    parallel: the adapter reads the sublayer's input instead of its output.
    scaling: s, the factor on the adapter's output (> 0).
    use_bias: the down and up projections have biases (AdapterHub's default); without them an
        adapter has 2·d·m parameters, the count source 000's formula uses.
    """

    method: ClassVar[str] = "adapters"
    bottleneck_size: Annotated[int, Range(ge=1, le=65536)] | None = None
    reduction_factor: Annotated[float, Range(gt=0)] | None = None
    activation: Literal["relu", "gelu", "silu", "swish", "tanh", "sigmoid", "identity"] = "relu"
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    parallel: bool = False
    scaling: Annotated[float, Range(gt=0)] = 1.0
    use_bias: bool = True

    def check(self) -> None:
        if self.bottleneck_size is not None and self.reduction_factor is not None:
            raise ConfigError(f"bottleneck_size={self.bottleneck_size} and reduction_factor={self.reduction_factor} "
                              "are both set: give one of them")

    def bottleneck(self, hidden: int) -> int:
        """m for a model of width `hidden`."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        if self.reduction_factor is None:
            return DEFAULT_BOTTLENECK
        size = int(hidden // self.reduction_factor)
        if size < 1:
            raise ConfigError(f"reduction_factor={self.reduction_factor} leaves no bottleneck for width {hidden}: "
                              f"use a factor <= {hidden}")
        return size


@dataclass(frozen=True)
class AdapterFootprint(Footprint):
    """2·d·m + d + m per adapter (down Linear(d, m)+bias, up Linear(m, d)+bias; 2·d·m without
    biases); houlsby: 2 per block (after attention and FFN), pfeiffer: 1 (after FFN)."""

    config: AdapterConfig

    def breakdown(self, shape, num_labels):
        d, m = shape.hidden, self.config.bottleneck(shape.hidden)
        each = 2 * d * m + (d + m if self.config.use_bias else 0)
        return {f"adapter after {SITE_LABELS[site]}": each * shape.layers
                for site in PLACEMENTS[self.config.placement]}

    def extra_activations(self, shape):
        # per adapter: its input (d, for W_down's gradient), σ's input and output (m each).
        m = self.config.bottleneck(shape.hidden)
        return {"adapters": (shape.hidden + 2 * m) * len(PLACEMENTS[self.config.placement])}


DECLARATION = MethodDeclaration(
    name="adapters", config_class=AdapterConfig, label="adapters",
    capabilities=Capabilities(mergeable=False, exact_unmerge=False, identity_at_init=True),
    implementation="peftlab.methods.adapters.layer:BottleneckAdapters", footprint=AdapterFootprint,
    literature=Literature(1e-3, {"bottleneck_size": 64},
                          "Houlsby et al. 2019: bottleneck 64 after attention and FFN, lr 1e-4..1e-3",
                          sweep=(3e-4, 1e-3, 3e-3)),
    paper="Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP, arXiv:1902.00751",
    choose=Path(__file__).with_name("choose.json"),
)
