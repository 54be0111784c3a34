"""IA³'s declaration (torch-free): config, default targets as roles, analytic count, literature.

IA³ (Liu et al. 2022, arXiv:2205.05638) scales keys and values (a vector on the projection's
output) and the FFN intermediate activation (a vector on the down projection's input); the
modules are in `layer.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import ConfigError, MethodConfig
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.core.footprint import Footprint, labels
from peftlab.core.shapes import LinearSpec, ModelShape

# Default targets as roles of the architecture table: keys and values (output scaled) and the
# FFN down projection (input scaled).
DEFAULT_ROLES = ("k", "v", "down")
FEEDFORWARD_ROLES = ("down",)


@dataclass(frozen=True)
class IA3Config(MethodConfig):
    """IA³ targets (Hugging Face PEFT's IA3Config field names).

    target_modules: modules that get a vector (list of names / `.suffix` / `re:` entries, or one
        full-match regex); None = the architecture's keys, values and FFN down projection.
    feedforward_modules: those of the targets whose INPUT is scaled (the others: their output);
        None = the FFN down projections. As a list it must be a subset of a list target_modules.
    exclude_modules: modules never adapted, same forms as target_modules.
    """

    method: ClassVar[str] = "ia3"
    target_modules: str | tuple[str, ...] | None = None
    feedforward_modules: str | tuple[str, ...] | None = None
    exclude_modules: str | tuple[str, ...] | None = None

    def check(self) -> None:
        targets, feedforward = self.target_modules, self.feedforward_modules
        if isinstance(targets, tuple) and isinstance(feedforward, tuple) and not set(feedforward) <= set(targets):
            raise ConfigError(f"feedforward_modules={list(feedforward)} must be a subset of "
                              f"target_modules={list(targets)}: add {sorted(set(feedforward) - set(targets))} "
                              "to target_modules")


@dataclass(frozen=True)
class IA3Footprint(Footprint):
    """One vector per target: its output width (a fused q/k/v projection: the k and v slices,
    2·kv), or for a feedforward target its input width (the FFN intermediate ff)."""

    config: IA3Config

    def widths(self, shape: ModelShape) -> dict[LinearSpec, int]:
        config = self.config
        targets = shape.linears_with(DEFAULT_ROLES) if config.target_modules is None \
            else shape.match(config.target_modules)
        feedforward = shape.linears_with(FEEDFORWARD_ROLES) if config.feedforward_modules is None \
            else shape.named(config.feedforward_modules)
        excluded = shape.named(config.exclude_modules) if config.exclude_modules is not None else ()
        fused = [m for m in targets if {"q", "k", "v"} <= set(m.roles)]
        return {m: m.in_features if m in feedforward else 2 * shape.kv_dim if m in fused else m.out_features
                for m in targets if m not in excluded}

    def breakdown(self, shape, num_labels):
        widths = self.widths(shape)
        return {label: widths[m] * shape.layers for m, label in labels(tuple(widths), shape).items()}

    def extra_activations(self, shape):
        # l ⊙ x keeps x (the unscaled activation) for the gradient of l.
        widths = self.widths(shape)
        return {"ia3 " + label: widths[m] for m, label in labels(tuple(widths), shape).items()}


DECLARATION = MethodDeclaration(
    name="ia3", config_class=IA3Config, label="IA³",
    # Unmerging divides by the vectors, exact only to rounding (and impossible for a zero scale).
    capabilities=Capabilities(mergeable=True, exact_unmerge=False, identity_at_init=True),
    implementation="peftlab.methods.ia3.layer:IA3", footprint=IA3Footprint,
    literature=Literature(3e-2, {}, "IA³ (Liu et al. 2022) and HF PEFT examples: lr 1e-2..3e-2 for short runs",
                          sweep=(3e-3, 1e-2, 3e-2)),
    paper="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than "
          "In-Context Learning, arXiv:2205.05638",
    hf_peft_type="IA3",
    choose=Path(__file__).with_name("choose.json"),
)
