"""Model shapes: every parameter of a transformer derived from its Hugging Face `config.json`.

Why: the estimator and the methods' analytic counts must work instantly for any model without
weights, so parameters are counted from the configuration alone. A block's linear layers come
from the architecture table (`core/architectures.py`); each count below mirrors the module tree
`transformers` instantiates (tests check the totals against meta-device models):

    bert / roberta  word V×d + position P×d + token-type Tt×d + LayerNorm 2d
                    per layer: query, key, value, attention.output.dense  Linear(d, d)+bias
                               intermediate.dense Linear(d, ff)+bias,
                               output.dense Linear(ff, d)+bias, 2 LayerNorm (2d each)
                    pooler.dense Linear(d, d)+bias
    distilbert      word V×d + position P×d + LayerNorm 2d
                    per layer: q_lin, k_lin, v_lin, out_lin Linear(d, d)+bias,
                               ffn.lin1 Linear(d, ff)+bias, ffn.lin2 Linear(ff, d)+bias, 2 LayerNorm
    gpt2            wte V×d + wpe P×d; per layer: c_attn Conv1D(d, 3d), attn.c_proj Conv1D(d, d),
                    mlp.c_fc Conv1D(d, ff), mlp.c_proj Conv1D(ff, d) (all with bias), 2 LayerNorm;
                    ln_f 2d; lm_head tied to wte
    llama-style     embed V×d; per layer: q_proj (d, H·hd), k_proj / v_proj (d, KV·hd),
    (llama,         o_proj (H·hd, d), gate_proj / up_proj (d, ff), down_proj (ff, d),
     mistral,       2 RMSNorm (d); final norm d; lm_head V×d unless tied.
     qwen2)         Qwen2 has q/k/v biases.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from peftlab.core.architectures import ARCHITECTURES, MODEL_TYPES, Architecture
from peftlab.errors import ConfigError, TargetError


@dataclass(frozen=True)
class LinearSpec:
    """One linear map inside a transformer block: `path` relative to the block, y = x·W + b.

    in_features × out_features weights (+ out_features bias). GPT-2's Conv1D is a linear map
    stored transposed; its counts are the same. `roles` as in the architecture table.
    """

    path: str
    in_features: int
    out_features: int
    bias: bool
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The leaf name users write in `target_modules` ("q_proj", "query", "c_attn")."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers every estimate is computed from.

    `total_override` replaces the derived total (the source documents' simplified model states
    "7e9 parameters" rather than deriving it); `None` means count exactly.
    """

    name: str
    family: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int = 0
    tied_embeddings: bool = True
    qkv_bias: bool = True
    o_bias: bool = True
    mlp_bias: bool = True
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    activation: str = "gelu"
    total_override: int | None = None

    @property
    def kv_dim(self) -> int:
        """Width of one layer's keys (and values): n_kv_heads × head_dim (< d under GQA)."""
        return self.kv_heads * self.head_dim

    @property
    def is_decoder(self) -> bool:
        return self.family in ("gpt2", "llama")

    @property
    def architecture(self) -> Architecture:
        """The architecture table's row of this shape's family."""
        return ARCHITECTURES[self.family]

    def layer_linears(self) -> tuple[LinearSpec, ...]:
        """Every linear module of one transformer block, in forward order."""
        q = self.heads * self.head_dim
        widths = {"d": self.hidden, "ff": self.ffn, "q": q, "kv": self.kv_dim, "qkv": q + 2 * self.kv_dim}
        return tuple(LinearSpec(m.path, widths[m.in_width], widths[m.out_width],
                                m.bias if isinstance(m.bias, bool) else getattr(self, m.bias), m.roles)
                     for m in self.architecture.linears)

    def linears_with(self, roles: tuple[str, ...]) -> tuple[LinearSpec, ...]:
        """The block linears carrying any of `roles` (see `core/architectures.py`)."""
        return tuple(m for m in self.layer_linears() if set(m.roles) & set(roles))

    def named(self, spec: tuple[str, ...] | str) -> tuple[LinearSpec, ...]:
        """Block linears `spec` names, as `core/targets.py` matches module paths: an exact path or a
        `.suffix` of it per entry (or "re:<regex>"), "all-linear", or one regex string that
        full-matches a block-relative path or the path in a block ("encoder.layer.0.<path>").
        Embeddings, pooler and heads are never block linears."""
        linears = self.layer_linears()
        if spec == "all-linear" or spec == ("all-linear",):
            return linears
        if isinstance(spec, str):
            spec = ("re:" + spec,)
        in_block = f"{self.architecture.layers}.0."
        return tuple(m for m in linears if any(_names(m.path, e) or _names(in_block + m.path, e) for e in spec))

    def match(self, targets: tuple[str, ...] | str, *, what: str = "target") -> tuple[LinearSpec, ...]:
        """`named(targets)`, where every entry must name a linear (else TargetError listing them)."""
        known = ", ".join(m.path for m in self.layer_linears())
        entries = (targets,) if isinstance(targets, str) else targets
        for entry in entries:
            if not self.named(entry if isinstance(targets, str) else (entry,)):
                raise TargetError(f"{what} {entry!r} matches no linear in a {self.family} block; "
                                  f"use one of: {known}, or all-linear")
        return self.named(targets)

    def norm_params(self) -> tuple[int, int]:
        """(parameters of one norm, norms per block): LayerNorm has weight+bias, RMSNorm weight."""
        return (self.hidden, 2) if self.family == "llama" else (2 * self.hidden, 2)

    def head_params(self, num_labels: int | None) -> int:
        """The classification head that trains in full with every method: the model's top-level
        `classifier` or `score` module, as peftlab's core selects it.

        BERT `classifier` Linear(d, K)+bias; RoBERTa `classifier` = dense Linear(d, d)+bias and
        out_proj Linear(d, K)+bias; DistilBERT `classifier` Linear(d, K)+bias (its
        `pre_classifier` Linear(d, d) is a separate, frozen module); GPT-2 / LLaMA `score`
        Linear(d, K) without bias. 0 without a head.
        """
        if not num_labels:
            return 0
        d, k = self.hidden, num_labels
        if self.family in ("bert", "distilbert"):
            return d * k + k
        if self.family == "roberta":
            return d * d + d + d * k + k
        return d * k

    def groups(self, num_labels: int | None = None) -> dict[str, int]:
        """Base-model parameters by module type for the model a task builds.

        With `num_labels`: the sequence-classification model (encoder pooler dropped for
        RoBERTa/DistilBERT as transformers does; LM head absent). Without: decoders are causal
        LMs (lm_head counted unless tied); encoders are the bare model with its pooler.
        """
        d, L, linears = self.hidden, self.layers, self.layer_linears()
        norm, per_block = self.norm_params()
        attention = sum(m.params for m in linears if _is_attention(m))
        mlp = sum(m.params for m in linears if not _is_attention(m))
        embeddings = self.vocab * d
        if self.family != "llama":
            embeddings += self.max_positions * d + self.type_vocab * d
        final_norm = 0 if self.family in ("bert", "roberta", "distilbert") else norm
        emb_norm = norm if self.family in ("bert", "roberta", "distilbert") else 0
        out = {"embeddings": embeddings, "attention": attention * L, "mlp": mlp * L,
               "norms": norm * per_block * L + final_norm + emb_norm}
        has_pooler = self.family == "bert" or (self.family == "roberta" and not num_labels)
        if has_pooler:
            out["pooler"] = d * d + d
        if num_labels and self.family == "distilbert":
            out["pre_classifier"] = d * d + d
        if num_labels:
            out["head"] = self.head_params(num_labels)
        elif self.is_decoder and not self.tied_embeddings:
            out["lm_head"] = self.vocab * d
        return out

    def total_params(self, num_labels: int | None = None) -> int:
        """Every parameter of the base model (exactly what transformers instantiates)."""
        if self.total_override is not None:
            return self.total_override + self.head_params(num_labels)
        return sum(self.groups(num_labels).values())

    def to_dict(self) -> dict:
        return asdict(self)


def _names(path: str, entry: str) -> bool:
    if entry.startswith("re:"):
        return re.fullmatch(entry[3:], path) is not None
    suffix = entry.lstrip(".")
    return path == suffix or path.endswith("." + suffix)


def _is_attention(linear: LinearSpec) -> bool:
    return bool(set(linear.roles) & {"q", "k", "v", "o"})


def shape_from_config(config: dict, name: str = "config") -> ModelShape:
    """A `ModelShape` from the dict of a Hugging Face `config.json`.

    Missing keys take transformers' defaults for the `model_type` (the architecture table's
    `config_defaults`); unknown model types raise `ConfigError` listing the supported ones.
    """
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"model_type {model_type!r} in {name} is not supported; "
                          f"use a config with model_type one of {', '.join(MODEL_TYPES)}")
    row = ARCHITECTURES[model_type]
    c = {**row.config_defaults, **{k: v for k, v in config.items() if v is not None}}

    def read(field: str, default=None):
        key = row.config_keys.get(field)
        value = c.get(key) if key is not None else None
        return default if value is None else value

    d, heads = read("hidden"), read("heads")
    return ModelShape(name, row.family, d, read("layers"), heads, read("kv_heads", heads),
                      read("head_dim", d // heads), read("ffn", 4 * d), read("vocab"), read("max_positions"),
                      type_vocab=read("type_vocab", 0),
                      tied_embeddings=read("tied_embeddings", True),
                      qkv_bias=read("qkv_bias", True), o_bias=read("o_bias", True), mlp_bias=read("mlp_bias", True),
                      attention_dropout=read("attention_dropout", 0.0), hidden_dropout=read("hidden_dropout", 0.0),
                      activation={"gpt2": "gelu_new", "llama": "silu"}.get(row.family, "gelu"))
