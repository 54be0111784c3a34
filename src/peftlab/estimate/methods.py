"""Per-method trainable parameters, counted from a `ModelShape` by peftlab's conventions.

Each method is a frozen config dataclass (field names mirror peftlab's method configs) that
declares what it trains and what it adds to the backward pass; shared code never branches on
the method name. Conventions, per transformer block of width d, L blocks, kv = n_kv·head_dim:

    full      every parameter
    lora      r·(in + out) per targeted linear (A: r×in, B: out×r); bias none|all|lora_only
    qlora     as lora; the frozen block linears are stored in NF4 (see `memory.py`)
    ia3       one vector per target: keys kv, values kv, FFN intermediate ff (input of down proj)
    adapters  2dm + d + m per adapter (down Linear(d, m)+bias, up Linear(m, d)+bias);
              houlsby: 2 per block (after attention and FFN), pfeiffer: 1 (after FFN)
    prefix    n·2·kv per block; projection=True trains instead an n×d embedding and the MLP
              Linear(d, h)+bias, Linear(h, 2·L·kv)+bias that produces those prefixes
    prompt    n·d at the input
A classification head (`num_labels`) trains in full with every method ("head" row).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar

from peftlab.errors import ConfigError, TargetError
from peftlab.estimate.nf4 import nf4_bits_per_param, nf4_bytes
from peftlab.estimate.shapes import LinearSpec, ModelShape

_DEFAULT_LORA_TARGETS = {"llama": ("q_proj", "v_proj"), "bert": ("query", "value"),
                         "roberta": ("query", "value"), "distilbert": ("q_lin", "v_lin"),
                         "gpt2": ("c_attn",)}
# IA³ target name -> (role, which side of the linear is scaled). GPT-2's fused c_attn is
# scaled on its key and value slices only, d each.
_IA3_TARGETS = {"llama": {"k_proj": "keys", "v_proj": "values", "down_proj": "ffn"},
                "bert": {"key": "keys", "value": "values", "output.dense": "ffn"},
                "roberta": {"key": "keys", "value": "values", "output.dense": "ffn"},
                "distilbert": {"k_lin": "keys", "v_lin": "values", "lin2": "ffn"},
                "gpt2": {"c_attn": "keys+values", "mlp.c_proj": "ffn"}}


def match_targets(shape: ModelShape, targets: tuple[str, ...] | str) -> tuple[LinearSpec, ...]:
    """Block linears named by `targets`: exact path, `.suffix` of a path, or "all-linear".

    Embeddings, pooler and heads are never block linears, so "all-linear" excludes them.
    """
    linears = shape.layer_linears()
    if targets == "all-linear" or targets == ("all-linear",):
        return linears
    names = (targets,) if isinstance(targets, str) else targets
    chosen = []
    for target in names:
        hits = [m for m in linears if m.path == target or m.path.endswith("." + target)]
        if not hits:
            known = ", ".join(m.path for m in linears)
            raise TargetError(f"target {target!r} matches no linear in a {shape.family} block; "
                              f"use one of: {known}, or all-linear")
        chosen += [m for m in hits if m not in chosen]
    return tuple(m for m in linears if m in chosen)


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


@dataclass(frozen=True)
class Method(ABC):
    """What a method trains and how it changes the backward pass (declared, not inferred)."""

    name: ClassVar[str]

    @abstractmethod
    def breakdown(self, shape: ModelShape, num_labels: int | None) -> dict[str, int]:
        """Trainable parameters by module type (without the head)."""

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
        return {"method": self.name, **asdict(self)}


def _positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} is invalid; it must be a positive integer")


@dataclass(frozen=True)
class Full(Method):
    """Full fine-tuning: every parameter trains, so every linear input is kept for backward."""

    name: ClassVar[str] = "full"

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


@dataclass(frozen=True)
class Lora(Method):
    """LoRA (Hu et al. 2021): h = W x + (alpha / r) · B A x, A: r×in, B: out×r."""

    name: ClassVar[str] = "lora"
    r: int = 8
    alpha: float = 16
    target_modules: tuple[str, ...] | str | None = None
    bias: str = "none"
    dropout: float = 0.0

    def __post_init__(self):
        _positive(r=self.r)
        if self.bias not in ("none", "all", "lora_only"):
            raise ConfigError(f"bias={self.bias!r} is invalid; use none, all or lora_only")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def targets(self, shape: ModelShape) -> tuple[LinearSpec, ...]:
        return match_targets(shape, self.target_modules or _DEFAULT_LORA_TARGETS[shape.family])

    def breakdown(self, shape, num_labels):
        targets = self.targets(shape)
        out = {label: self.r * (m.in_features + m.out_features) * shape.layers
               for m, label in labels(targets, shape).items()}
        if self.bias == "all":
            out["bias"] = bias_params(shape, num_labels)
        elif self.bias == "lora_only":
            out["bias"] = sum(m.out_features for m in targets if m.bias) * shape.layers
        return out

    def saved_inputs(self, shape):
        return self.targets(shape)

    def trained_base(self, breakdown):
        return breakdown.get("bias", 0)

    def extra_activations(self, shape):
        # A x (r per token) is the input of B and is kept for B's weight gradient. With dropout,
        # A's input is the dropped x, kept beside the dropout's mask (float noise on CPU): one more
        # input-sized tensor per target than the x that `saved_inputs` counts.
        extra = {"lora A·x": self.r * len(self.targets(shape))}
        if self.dropout > 0:
            extra["lora dropout mask"] = sum(m.in_features for m in self.targets(shape))
        return extra


@dataclass(frozen=True)
class QLora(Lora):
    """QLoRA (Dettmers et al. 2023): LoRA over a frozen NF4 base with double quantization."""

    name: ClassVar[str] = "qlora"
    block_size: int = 64
    double_quant: bool = True
    double_quant_block_size: int = 256

    def __post_init__(self):
        super().__post_init__()
        _positive(block_size=self.block_size,
                  double_quant_block_size=self.double_quant_block_size)

    def notes(self, shape):
        bits = nf4_bits_per_param(self.block_size, self.double_quant,
                                  self.double_quant_block_size)
        return (f"frozen block linear weights stored in NF4 at {bits:.6g} bits per parameter",)

    def frozen_weight_bytes(self, numel, bytes_per_param):
        return nf4_bytes(numel, self.block_size, self.double_quant, self.double_quant_block_size)


@dataclass(frozen=True)
class IA3(Method):
    """IA³ (Liu et al. 2022): k ← l_k ⊙ k, v ← l_v ⊙ v, h_ff ← l_ff ⊙ h_ff (vectors start at 1)."""

    name: ClassVar[str] = "ia3"
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def roles(self, shape: ModelShape) -> dict[str, int]:
        """Scaled activation -> width: keys/values kv (GQA-aware), ffn the intermediate ff."""
        known = _IA3_TARGETS[shape.family]
        chosen = self.target_modules or tuple(known)
        for target in chosen:
            if target not in known:
                raise TargetError(f"IA3 target {target!r} is not scalable in a {shape.family} "
                                  f"block; use some of: {', '.join(known)}")
        widths = {"keys": shape.kv_dim, "values": shape.kv_dim, "ffn": shape.ffn}
        return {role: widths[role] for target in chosen for role in known[target].split("+")}

    def breakdown(self, shape, num_labels):
        return {role: width * shape.layers for role, width in self.roles(shape).items()}

    def extra_activations(self, shape):
        # l ⊙ x keeps x (the unscaled activation) for the gradient of l.
        return {"ia3 " + role: width for role, width in self.roles(shape).items()}


@dataclass(frozen=True)
class Adapters(Method):
    """Bottleneck adapters (Houlsby et al. 2019): h ← h + W_up σ(W_down h), W_down: d→m."""

    name: ClassVar[str] = "adapters"
    bottleneck_size: int | None = None
    reduction_factor: float | None = None
    placement: str = "houlsby"
    bias: bool = True  # False reproduces the seeds' formula 2·(2dm)·L

    def __post_init__(self):
        if self.bottleneck_size is not None and self.reduction_factor is not None:
            raise ConfigError("bottleneck_size and reduction_factor are both set; give one")
        if self.bottleneck_size is not None:
            _positive(bottleneck_size=self.bottleneck_size)
        if self.reduction_factor is not None and self.reduction_factor <= 0:
            raise ConfigError(f"reduction_factor={self.reduction_factor} is invalid; "
                              "it must be > 0")
        if self.placement not in ("houlsby", "pfeiffer"):
            raise ConfigError(f"placement={self.placement!r} is invalid; use houlsby or pfeiffer")

    def bottleneck(self, hidden: int) -> int:
        """m: bottleneck_size, else d // reduction_factor, else 64 (peftlab's default)."""
        if self.bottleneck_size is not None:
            return self.bottleneck_size
        if self.reduction_factor is not None:
            return max(1, int(hidden // self.reduction_factor))
        return 64

    def sites(self) -> tuple[str, ...]:
        return ("attention", "ffn") if self.placement == "houlsby" else ("ffn",)

    def breakdown(self, shape, num_labels):
        d, m = shape.hidden, self.bottleneck(shape.hidden)
        each = 2 * d * m + (d + m if self.bias else 0)
        return {f"adapter after {site}": each * shape.layers for site in self.sites()}

    def extra_activations(self, shape):
        # per adapter: its input (d, for W_down's gradient), σ's input and output (m each).
        return {"adapters": (shape.hidden + 2 * self.bottleneck(shape.hidden)) * len(self.sites())}


@dataclass(frozen=True)
class Prefix(Method):
    """Prefix tuning (Li & Liang 2021): n learned keys and values prepended at every block."""

    name: ClassVar[str] = "prefix"
    num_virtual_tokens: int = 20
    projection: bool = False
    encoder_hidden_size: int | None = None

    def __post_init__(self):
        _positive(num_virtual_tokens=self.num_virtual_tokens)
        if self.encoder_hidden_size is not None:
            _positive(encoder_hidden_size=self.encoder_hidden_size)

    def prefix_tokens(self) -> int:
        return self.num_virtual_tokens

    def breakdown(self, shape, num_labels):
        n, d, width = self.num_virtual_tokens, shape.hidden, 2 * shape.layers * shape.kv_dim
        if not self.projection:
            return {"prefix keys+values": n * width}
        h = self.encoder_hidden_size or d
        return {"prefix embedding": n * d, "projection mlp": d * h + h + h * width + width}

    def notes(self, shape):
        if not self.projection:
            return ()
        folded = self.num_virtual_tokens * 2 * shape.layers * shape.kv_dim
        return (f"the projection MLP trains, then folds into n·2·L·kv = {folded:,} prefix "
                f"parameters for inference",)


@dataclass(frozen=True)
class Prompt(Method):
    """Prompt tuning (Lester et al. 2021): n learned input embeddings, n×d."""

    name: ClassVar[str] = "prompt"
    num_virtual_tokens: int = 20

    def __post_init__(self):
        _positive(num_virtual_tokens=self.num_virtual_tokens)

    def prompt_tokens(self) -> int:
        return self.num_virtual_tokens

    def breakdown(self, shape, num_labels):
        return {"prompt embeddings": self.num_virtual_tokens * shape.hidden}


METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (Full, Lora, QLora, IA3, Adapters, Prefix, Prompt)}


def make_method(name: str, **hyperparams) -> Method:
    """The method config `name` with `hyperparams`; errors name the bad method or field."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; use one of: {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = set(cls.__dataclass_fields__)
    unknown = sorted(set(hyperparams) - fields)
    if unknown:
        raise ConfigError(f"{name} has no option {', '.join(unknown)}; its options are: "
                          f"{', '.join(sorted(fields)) or 'none'}")
    return cls(**hyperparams)
