"""Model shapes: every parameter of a transformer derived from its Hugging Face `config.json`.

Why: the estimator must work instantly for any model without weights, so parameters are
counted from the configuration alone. Each count below mirrors the module tree `transformers`
instantiates (tests check the totals against meta-device models):

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

from dataclasses import asdict, dataclass

FAMILIES = ("bert", "roberta", "distilbert", "gpt2", "llama")

# model_type -> (family, transformers' config defaults for keys a config.json may omit).
# The defaults are those of transformers' config classes, so a sparse config.json counts the
# same parameters transformers would build from it.
_MODEL_TYPES: dict[str, tuple[str, dict]] = {
    "bert": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                          num_attention_heads=12, intermediate_size=3072,
                          max_position_embeddings=512, type_vocab_size=2,
                          hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)),
    "roberta": ("roberta", dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                                num_attention_heads=12, intermediate_size=3072,
                                max_position_embeddings=512, type_vocab_size=2,
                                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)),
    "distilbert": ("distilbert", dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12,
                                      hidden_dim=3072, max_position_embeddings=512,
                                      dropout=0.1, attention_dropout=0.1)),
    "gpt2": ("gpt2", dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                          n_positions=1024, resid_pdrop=0.1, attn_pdrop=0.1)),
    "llama": ("llama", dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=None,
                            intermediate_size=11008, max_position_embeddings=2048,
                            tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                            attention_dropout=0.0)),
    "mistral": ("llama", dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=8,
                              intermediate_size=14336, max_position_embeddings=131072,
                              tie_word_embeddings=False, attention_dropout=0.0)),
    "qwen2": ("llama", dict(vocab_size=151936, hidden_size=4096, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=32,
                            intermediate_size=22016, max_position_embeddings=32768,
                            tie_word_embeddings=False, attention_dropout=0.0)),
}
MODEL_TYPES = tuple(_MODEL_TYPES)


@dataclass(frozen=True)
class LinearSpec:
    """One linear map inside a transformer block: `path` relative to the block, y = x·W + b.

    in_features × out_features weights (+ out_features bias). GPT-2's Conv1D is a linear map
    stored transposed; its counts are the same.
    """

    path: str
    in_features: int
    out_features: int
    bias: bool

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

    `total_override` replaces the derived total (the seeds' simplified model states
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

    def layer_linears(self) -> tuple[LinearSpec, ...]:
        """Every linear module of one transformer block, in forward order."""
        d, ff, q = self.hidden, self.ffn, self.heads * self.head_dim
        if self.family in ("bert", "roberta"):
            return (LinearSpec("attention.self.query", d, d, True),
                    LinearSpec("attention.self.key", d, d, True),
                    LinearSpec("attention.self.value", d, d, True),
                    LinearSpec("attention.output.dense", d, d, True),
                    LinearSpec("intermediate.dense", d, ff, True),
                    LinearSpec("output.dense", ff, d, True))
        if self.family == "distilbert":
            return (LinearSpec("attention.q_lin", d, d, True),
                    LinearSpec("attention.k_lin", d, d, True),
                    LinearSpec("attention.v_lin", d, d, True),
                    LinearSpec("attention.out_lin", d, d, True),
                    LinearSpec("ffn.lin1", d, ff, True),
                    LinearSpec("ffn.lin2", ff, d, True))
        if self.family == "gpt2":
            return (LinearSpec("attn.c_attn", d, 3 * d, True),
                    LinearSpec("attn.c_proj", d, d, True),
                    LinearSpec("mlp.c_fc", d, ff, True),
                    LinearSpec("mlp.c_proj", ff, d, True))
        return (LinearSpec("self_attn.q_proj", d, q, self.qkv_bias),
                LinearSpec("self_attn.k_proj", d, self.kv_dim, self.qkv_bias),
                LinearSpec("self_attn.v_proj", d, self.kv_dim, self.qkv_bias),
                LinearSpec("self_attn.o_proj", q, d, self.o_bias),
                LinearSpec("mlp.gate_proj", d, ff, self.mlp_bias),
                LinearSpec("mlp.up_proj", d, ff, self.mlp_bias),
                LinearSpec("mlp.down_proj", ff, d, self.mlp_bias))

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
        attention = sum(m.params for m in linears if _is_attention(m.path))
        mlp = sum(m.params for m in linears if not _is_attention(m.path))
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


def _is_attention(path: str) -> bool:
    return path.startswith(("attention.", "attn.", "self_attn."))


def shape_from_config(config: dict, name: str = "config") -> ModelShape:
    """A `ModelShape` from the dict of a Hugging Face `config.json`.

    Missing keys take transformers' defaults for the `model_type`; unknown model types raise
    `ConfigError` listing the supported ones.
    """
    from peftlab.errors import ConfigError

    model_type = config.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ConfigError(f"model_type {model_type!r} in {name} is not supported; "
                          f"use a config with model_type one of {', '.join(MODEL_TYPES)}")
    family, defaults = _MODEL_TYPES[model_type]
    c = {**defaults, **{k: v for k, v in config.items() if v is not None}}
    if family in ("bert", "roberta"):
        d, heads = c["hidden_size"], c["num_attention_heads"]
        return ModelShape(name, family, d, c["num_hidden_layers"], heads, heads, d // heads,
                          c["intermediate_size"], c["vocab_size"], c["max_position_embeddings"],
                          type_vocab=c["type_vocab_size"],
                          attention_dropout=c["attention_probs_dropout_prob"],
                          hidden_dropout=c["hidden_dropout_prob"])
    if family == "distilbert":
        d, heads = c["dim"], c["n_heads"]
        return ModelShape(name, family, d, c["n_layers"], heads, heads, d // heads,
                          c["hidden_dim"], c["vocab_size"], c["max_position_embeddings"],
                          attention_dropout=c["attention_dropout"], hidden_dropout=c["dropout"])
    if family == "gpt2":
        d, heads = c["n_embd"], c["n_head"]
        return ModelShape(name, family, d, c["n_layer"], heads, heads, d // heads,
                          c["n_inner"] or 4 * d, c["vocab_size"], c["n_positions"],
                          attention_dropout=c["attn_pdrop"], hidden_dropout=c["resid_pdrop"],
                          activation="gelu_new")
    d, heads = c["hidden_size"], c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads") or heads
    qkv_bias = True if model_type == "qwen2" else c.get("attention_bias", False)
    return ModelShape(name, family, d, c["num_hidden_layers"], heads, kv_heads,
                      c.get("head_dim") or d // heads, c["intermediate_size"], c["vocab_size"],
                      c["max_position_embeddings"],
                      tied_embeddings=c["tie_word_embeddings"], qkv_bias=qkv_bias,
                      o_bias=c.get("attention_bias", False), mlp_bias=c.get("mlp_bias", False),
                      attention_dropout=c["attention_dropout"], activation="silu")
