"""The one table of per-architecture facts every method, the estimator and the loaders read.

One row per Hugging Face `model_type`: where the transformer blocks are, the linear layers of
one block with their role and shape, and the few facts methods need beyond that. Methods name
*roles*, never module names, so a new architecture is one row here:

    role    the linear that computes ...              bert                    gpt2          llama
    q k v   queries, keys, values                     attention.self.query    attn.c_attn   self_attn.q_proj
    o       the attention output projection           attention.output.dense  attn.c_proj   self_attn.o_proj
    up      the FFN input projection (gate: its gate) intermediate.dense      mlp.c_fc      mlp.up_proj, gate_proj
    down    the FFN output projection                 output.dense            mlp.c_proj    mlp.down_proj

LoRA's default targets are the roles (q, v), IA³'s (k, v) + down, bottleneck adapters sit after
(o, down). GPT-2's fused `c_attn` carries q, k and v. Widths are symbols of the model shape:
d (hidden), q (heads · head_dim), kv (kv heads · head_dim), ff (FFN width), qkv (q + 2 kv).

Pure Python (no torch): the estimator reads it for model shapes given as config.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from peftlab.errors import TargetError

ROLES = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class Linear:
    """One linear layer of a block: `path` relative to the block, its roles and symbolic widths.

    bias: True, or the name of the `ModelShape` flag that decides it (LLaMA-style models).
    """

    path: str
    roles: tuple[str, ...]
    in_width: str
    out_width: str
    bias: bool | str = True

    @property
    def name(self) -> str:
        """The leaf name users write in `target_modules` ("q_proj", "query", "c_attn")."""
        return self.path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Architecture:
    """One row of the table (see the module docstring).

    layers: the ModuleList of blocks inside `model.base_model` ("encoder.layer").
    sublayer_inputs: per role of a sublayer's output projection (o, down), the argument of that
        projection's parent module holding the sublayer's input, as (keyword, position); parallel
        bottleneck adapters read it.
    first_token_pooler: the sequence representation is the first token's ([CLS] / <s>).
    config_keys / config_defaults: how a config.json names the shape (see `core/shapes.py`).
    features: what the model's layers offer that some methods need: "kv_cache" (its attention
        takes a key/value cache, which prefix tuning fills); "linear_lm_head" (its causal-LM
        forward is ``lm_head(hidden)`` with no soft-capping or scaling and takes
        ``logits_to_keep``, so training computes the loss with the head, `train/lm_loss.py`).
    """

    family: str
    layers: str
    linears: tuple[Linear, ...]
    sublayer_inputs: dict[str, tuple[str, int]]
    first_token_pooler: bool
    config_keys: dict[str, str] = field(default_factory=dict)
    config_defaults: dict[str, object] = field(default_factory=dict)
    features: tuple[str, ...] = ("kv_cache",)

    def with_roles(self, roles: tuple[str, ...]) -> tuple[Linear, ...]:
        """The block's linears carrying any of `roles`, in block order."""
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}: roles are {', '.join(ROLES)}")
        return tuple(linear for linear in self.linears if set(linear.roles) & set(roles))

    def names(self, roles: tuple[str, ...]) -> tuple[str, ...]:
        """Target names (dotted suffixes, `core/targets.py`) that select exactly the linears of
        `roles`: each one's shortest suffix that no other linear of the block ends with
        ("query", "attention.output.dense"). A linear with no such suffix (BERT's FFN
        `output.dense` ends `attention.output.dense` too) needs `pattern`, and raises here."""
        names = []
        for linear in self.with_roles(roles):
            parts = linear.path.split(".")
            suffixes = [".".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]
            unique = [s for s in suffixes if not any(other is not linear and (other.path == s or
                      other.path.endswith("." + s)) for other in self.linears)]
            if not unique:
                raise ValueError(f"{self.family}: no target name selects {linear.path} alone; use pattern()")
            names.append(unique[0])
        return tuple(names)

    def pattern(self, roles: tuple[str, ...]) -> str:
        """A full-match regex of the module paths of the linears of `roles` in any block."""
        paths = "|".join(re.escape(linear.path) for linear in self.with_roles(roles))
        return rf"(?:.*\.)?{re.escape(self.layers)}\.\d+\.(?:{paths})"

    def fused(self, linear: Linear) -> bool:
        """True for a linear computing queries, keys and values at once (GPT-2's c_attn)."""
        return {"q", "k", "v"} <= set(linear.roles)


_BERT_LINEARS = (
    Linear("attention.self.query", ("q",), "d", "q"),
    Linear("attention.self.key", ("k",), "d", "kv"),
    Linear("attention.self.value", ("v",), "d", "kv"),
    Linear("attention.output.dense", ("o",), "q", "d"),
    Linear("intermediate.dense", ("up",), "d", "ff"),
    Linear("output.dense", ("down",), "ff", "d"),
)
_BERT_KEYS = dict(hidden="hidden_size", layers="num_hidden_layers", heads="num_attention_heads",
                  ffn="intermediate_size", vocab="vocab_size", max_positions="max_position_embeddings",
                  type_vocab="type_vocab_size", attention_dropout="attention_probs_dropout_prob",
                  hidden_dropout="hidden_dropout_prob")
_LLAMA_LINEARS = (
    Linear("self_attn.q_proj", ("q",), "d", "q", "qkv_bias"),
    Linear("self_attn.k_proj", ("k",), "d", "kv", "qkv_bias"),
    Linear("self_attn.v_proj", ("v",), "d", "kv", "qkv_bias"),
    Linear("self_attn.o_proj", ("o",), "q", "d", "o_bias"),
    Linear("mlp.gate_proj", ("gate",), "d", "ff", "mlp_bias"),
    Linear("mlp.up_proj", ("up",), "d", "ff", "mlp_bias"),
    Linear("mlp.down_proj", ("down",), "ff", "d", "mlp_bias"),
)
_LLAMA_KEYS = dict(hidden="hidden_size", layers="num_hidden_layers", heads="num_attention_heads",
                   kv_heads="num_key_value_heads", head_dim="head_dim", ffn="intermediate_size",
                   vocab="vocab_size", max_positions="max_position_embeddings",
                   tied_embeddings="tie_word_embeddings", attention_dropout="attention_dropout",
                   qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias")
_LLAMA_INPUTS = {"o": ("hidden_states", 0), "down": ("x", 0)}
# The defaults of transformers' config classes for keys a config.json may omit, so a sparse
# config.json counts the parameters transformers would build from it.
_LLAMA_DEFAULTS = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=None, intermediate_size=11008, max_position_embeddings=2048,
                       tie_word_embeddings=False, attention_bias=False, mlp_bias=False, attention_dropout=0.0)

_DECODER_FEATURES = ("kv_cache", "linear_lm_head")
# The fused loss head of a "linear_lm_head" model (`train/lm_loss.py`) writes its logits into a
# float32 workspace of at most this many bytes, a chunk of rows at a time; the estimator counts it.
LOSS_HEAD_WORKSPACE_BYTES = 256 * 2**20


def loss_head_rows(vocab: int) -> int:
    """Rows of logits per chunk of the fused loss head for a vocabulary of `vocab`."""
    return max(1, LOSS_HEAD_WORKSPACE_BYTES // (4 * vocab))


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture(
        "bert", "encoder.layer", _BERT_LINEARS, {"o": ("input_tensor", 1), "down": ("input_tensor", 1)}, True,
        _BERT_KEYS, dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                         hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)),
    "roberta": Architecture(
        "roberta", "encoder.layer", _BERT_LINEARS, {"o": ("input_tensor", 1), "down": ("input_tensor", 1)}, True,
        _BERT_KEYS, dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                         hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)),
    "distilbert": Architecture(
        "distilbert", "transformer.layer",
        (Linear("attention.q_lin", ("q",), "d", "q"), Linear("attention.k_lin", ("k",), "d", "kv"),
         Linear("attention.v_lin", ("v",), "d", "kv"), Linear("attention.out_lin", ("o",), "q", "d"),
         Linear("ffn.lin1", ("up",), "d", "ff"), Linear("ffn.lin2", ("down",), "ff", "d")),
        {"o": ("hidden_states", 0), "down": ("input", 0)}, True,
        dict(hidden="dim", layers="n_layers", heads="n_heads", ffn="hidden_dim", vocab="vocab_size",
             max_positions="max_position_embeddings", attention_dropout="attention_dropout",
             hidden_dropout="dropout"),
        dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512,
             dropout=0.1, attention_dropout=0.1),
        features=()),  # its attention takes no cache
    "gpt2": Architecture(
        "gpt2", "h",
        (Linear("attn.c_attn", ("q", "k", "v"), "d", "qkv"), Linear("attn.c_proj", ("o",), "q", "d"),
         Linear("mlp.c_fc", ("up",), "d", "ff"), Linear("mlp.c_proj", ("down",), "ff", "d")),
        {"o": ("hidden_states", 0), "down": ("hidden_states", 0)}, False,
        dict(hidden="n_embd", layers="n_layer", heads="n_head", ffn="n_inner", vocab="vocab_size",
             max_positions="n_positions", attention_dropout="attn_pdrop", hidden_dropout="resid_pdrop"),
        dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_inner=None, n_positions=1024,
             resid_pdrop=0.1, attn_pdrop=0.1),
        features=_DECODER_FEATURES),
    "llama": Architecture("llama", "layers", _LLAMA_LINEARS, _LLAMA_INPUTS, False, _LLAMA_KEYS, _LLAMA_DEFAULTS,
                          features=_DECODER_FEATURES),
    "mistral": Architecture(
        "llama", "layers", _LLAMA_LINEARS, _LLAMA_INPUTS, False, _LLAMA_KEYS,
        {**_LLAMA_DEFAULTS, "num_key_value_heads": 8, "intermediate_size": 14336, "max_position_embeddings": 131072},
        features=_DECODER_FEATURES),
    # Qwen2 projects queries, keys and values with biases (its config has no attention_bias key).
    "qwen2": Architecture(
        "llama", "layers", _LLAMA_LINEARS, _LLAMA_INPUTS, False, {**_LLAMA_KEYS, "qkv_bias": "qwen2_qkv_bias"},
        {**_LLAMA_DEFAULTS, "vocab_size": 151936, "num_key_value_heads": 32, "intermediate_size": 22016,
         "max_position_embeddings": 32768, "qwen2_qkv_bias": True},
        features=_DECODER_FEATURES),
}
MODEL_TYPES = tuple(ARCHITECTURES)


def architecture(model_type: str | None, *, purpose: str = "this") -> Architecture:
    """The row of `model_type`; an unknown type is a TargetError naming the known ones."""
    if model_type not in ARCHITECTURES:
        raise TargetError(f"{purpose} does not know the layers of model_type {model_type!r} (known: "
                          f"{', '.join(MODEL_TYPES)}): name the modules explicitly")
    return ARCHITECTURES[model_type]


def model_architecture(model, *, purpose: str = "this") -> Architecture:
    """The row of a loaded Hugging Face model (any object with `.config.model_type`)."""
    return architecture(getattr(getattr(model, "config", None), "model_type", None), purpose=purpose)


def missing_features(model, needs: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `needs` the row of `model` says it lacks (none for a model_type not in the table)."""
    row = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None))
    return () if row is None else tuple(need for need in needs if need not in row.features)
