"""A configured method's analytic footprint on a model shape: the counting half of a declaration.

Each method declares a `Footprint` subclass beside its config; `peftlab estimate`, `choose` and
`compare` build it from a config (`declaration.footprint(config)`) and ask it, for a
`ModelShape` (see `core/shapes.py`), what the method trains and what it adds to the backward
pass. Shared code never branches on the method name. Conventions per transformer block of width
d, L blocks, kv = n_kv · head_dim; a classification head trains in full with every method and is
counted by the estimator, not here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from peftlab.core.config import MethodConfig
from peftlab.core.shapes import LinearSpec, ModelShape


@dataclass(frozen=True)
class Footprint(ABC):
    """What `config`'s method trains and how it changes the backward pass (declared, not inferred)."""

    config: MethodConfig

    @abstractmethod
    def breakdown(self, shape: ModelShape, num_labels: int | None) -> dict[str, int]:
        """Trainable parameters by module type (without the head): every method declares its count."""

    def saved_inputs(self, shape: ModelShape) -> tuple[LinearSpec, ...]:
        """Block linears whose input must be kept for backward (a weight-gradient needs it)."""
        return ()

    def extra_activations(self, shape: ModelShape) -> dict[str, int]:
        """Elements per token per block that the method's own layers save for backward."""
        return {}

    def trains_base(self) -> bool:
        """True when embeddings and norms train (their backward inputs must be kept)."""
        return False

    def trained_base(self, breakdown: dict[str, int]) -> int:
        """How much of `breakdown` is base-model parameters made trainable (not new ones)."""
        return 0

    def frozen_weight_bytes(self, numel: int, bytes_per_param: int) -> int:
        """Bytes to store one frozen block linear weight of `numel` values."""
        return numel * bytes_per_param

    def prompt_tokens(self) -> int:
        """Tokens the method adds to every input sequence."""
        return 0

    def prefix_tokens(self) -> int:
        """Keys and values the method adds at every block."""
        return 0

    def notes(self, shape: ModelShape) -> tuple[str, ...]:
        """Facts about this configuration a reader of the estimate should know."""
        return ()

    def to_dict(self) -> dict:
        return self.config.to_dict()


def labels(linears: tuple[LinearSpec, ...], shape: ModelShape) -> dict[LinearSpec, str]:
    """Short breakdown labels: the leaf name, or the block path where leaf names repeat."""
    leaves = [m.name for m in shape.layer_linears()]
    return {m: m.name if leaves.count(m.name) == 1 else m.path for m in linears}


def bias_params(shape: ModelShape, num_labels: int | None) -> int:
    """Every parameter named "bias" outside the head: block linears, LayerNorms, pooler."""
    linear = sum(m.out_features for m in shape.layer_linears() if m.bias) * shape.layers
    norms = 0 if shape.family == "llama" else shape.hidden * (2 * shape.layers + 1)
    pooler = shape.hidden if "pooler" in shape.groups(num_labels) else 0
    return linear + norms + pooler


def kept_layers(layers: tuple[int, ...] | None, shape: ModelShape) -> int:
    """How many of the shape's blocks a `layers` restriction keeps (all without one)."""
    return shape.layers if layers is None else len({i for i in layers if 0 <= i < shape.layers})
