"""generate_texts: batching with left padding gives the same greedy texts as one prompt at a time,
in the caller's order, and the model's train/eval mode is restored."""

from helpers_tokenizer import word_tokenizer
from tiny_models import VOCAB, tiny_model

from peftlab.data import PromptFormat, generate_texts

# A vocabulary no larger than the tiny model's embedding table (VOCAB ids).
WORDS = " ".join(f"w{i}" for i in range(VOCAB - 3))


def test_batched_equals_one_by_one_and_keeps_order():
    tokenizer = word_tokenizer(WORDS)
    model = tiny_model("llama", "causal-lm").train()
    prompts = ["w1 w2 w3 w4 w5 w6", "w7", "w8 w9 w10", "w11 w12"]  # ragged: left padding matters
    fmt = PromptFormat("{prompt}")
    batched = generate_texts(model, tokenizer, prompts, max_new_tokens=4, batch_size=3, prompt_format=fmt)
    single = [generate_texts(model, tokenizer, [p], max_new_tokens=4, prompt_format=fmt)[0] for p in prompts]
    assert batched == single
    assert all(isinstance(t, str) for t in batched) and any(batched)
    assert model.training  # restored


def test_stops_at_max_new_tokens():
    tokenizer = word_tokenizer(WORDS)
    model = tiny_model("gpt2", "causal-lm")
    texts = generate_texts(model, tokenizer, ["w1 w2"], max_new_tokens=3, prompt_format=PromptFormat("{prompt}"))
    assert len(texts[0].split()) <= 3
    assert not model.training  # eval mode restored as eval
