"""Tiny random models built from real `transformers` configs, shared by the whole suite.

Each builder returns a freshly initialised model in eval mode with a fixed seed, so two calls
give identical weights. Sizes are chosen so a forward pass takes milliseconds yet every
architectural feature the methods must handle is present: BERT's separate q/k/v Linear layers,
GPT-2's fused `c_attn` Conv1D, LLaMA's grouped-query attention (4 query heads, 2 KV heads),
rotary embeddings and gated MLP. DistilBERT, RoBERTa, Mistral and Qwen2 (q/k/v biases) complete
the architecture table (`peftlab/core/architectures.py`), so every row of it is tested.
"""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    MistralConfig,
    MistralForCausalLM,
    MistralForSequenceClassification,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 128


def bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def gpt2_config() -> GPT2Config:
    return GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
    )


# The LLaMA-style decoders (LLaMA, Mistral, Qwen2) share one tiny shape.
_DECODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, intermediate_size=48, max_position_embeddings=64, num_labels=2,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def llama_config() -> LlamaConfig:
    return LlamaConfig(**_DECODER)


def distilbert_config() -> DistilBertConfig:
    return DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
        num_labels=2, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, pad_token_id=0,
    )


def roberta_config() -> RobertaConfig:
    return RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=66, num_labels=2, type_vocab_size=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1,
    )


def mistral_config() -> MistralConfig:
    return MistralConfig(**_DECODER)


def qwen2_config() -> Qwen2Config:
    return Qwen2Config(**_DECODER)  # q/k/v projections with biases


_BUILDERS = {
    ("bert", "classification"): (bert_config, BertForSequenceClassification),
    ("gpt2", "classification"): (gpt2_config, GPT2ForSequenceClassification),
    ("gpt2", "causal-lm"): (gpt2_config, GPT2LMHeadModel),
    ("llama", "classification"): (llama_config, LlamaForSequenceClassification),
    ("llama", "causal-lm"): (llama_config, LlamaForCausalLM),
    ("distilbert", "classification"): (distilbert_config, DistilBertForSequenceClassification),
    ("roberta", "classification"): (roberta_config, RobertaForSequenceClassification),
    ("mistral", "classification"): (mistral_config, MistralForSequenceClassification),
    ("mistral", "causal-lm"): (mistral_config, MistralForCausalLM),
    ("qwen2", "classification"): (qwen2_config, Qwen2ForSequenceClassification),
    ("qwen2", "causal-lm"): (qwen2_config, Qwen2ForCausalLM),
}

ARCHITECTURES = ("bert", "gpt2", "llama")
# Every row of the architecture table, with the task its tiny model is built for in the suites that
# cover all of them (the conformance suite, the Hugging Face PEFT oracles for default targets).
TABLE_MODELS = (("bert", "classification"), ("distilbert", "classification"), ("roberta", "classification"),
                ("gpt2", "causal-lm"), ("llama", "causal-lm"), ("mistral", "causal-lm"),
                ("qwen2", "classification"))


def tiny_model(arch: str, task: str = "classification", seed: int = 0) -> torch.nn.Module:
    """A 2-layer random model of `arch` (a row of `_BUILDERS`) for `task`."""
    make_config, model_class = _BUILDERS[(arch, task)]
    torch.manual_seed(seed)
    model = model_class(make_config())
    # Randomise biases and norms too, so a method that forgot a bias or a norm shows up.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def tiny_batch(batch: int = 3, seq: int = 7, seed: int = 1, pad_last: bool = True) -> dict:
    """Token ids with a padded last row (attention mask zeros at its end) and labels."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch, seq), generator=generator)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    if pad_last and batch > 1:
        attention_mask[-1, seq - 2:] = 0
        input_ids[-1, seq - 2:] = 0
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# --- shared by the Hugging Face PEFT oracle tests ------------------------------------------------
def oracle_batch(task: str) -> dict:
    """`tiny_batch()` for `task`: a causal LM is run without labels (its logits are compared)."""
    batch = tiny_batch()
    if task == "causal-lm":
        del batch["labels"]
    return batch


def logits_of(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def perturb(params, seed: int = 5, scale: float = 0.1) -> None:
    """Add seeded noise to every tensor of `params`, as training would move them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in params:
            param.add_(scale * torch.randn(param.shape, generator=generator))
