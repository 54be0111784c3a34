"""Greedy decoding of many prompts in batches, for causal-LM evaluation.

Works with any model exposing Hugging Face `generate()` (a plain `*ForCausalLM`, or one with
adapters applied). Prompts are left-padded, so every row's last prompt token sits at the same
position and the new tokens of the whole batch are the columns after the prompt width:

    input_ids  (B, P)   left-padded prompts, attention_mask 0 on the padding
    generate   (B, P + N) with N <= max_new_tokens; new tokens = [:, P:]

Prompts are processed in order of length (less padding per batch) and the texts come back in
the caller's order.
"""

from __future__ import annotations

from typing import Sequence

import torch

from peftlab.data.collators import PromptFormat, pad, pad_id


def generate_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    prompt_format: PromptFormat = PromptFormat(),
) -> list[str]:
    """Greedy continuations of `prompts` (rendered with `prompt_format`), one stripped text each.

    Decoding stops at the tokenizer's EOS or after `max_new_tokens`; special tokens are dropped.
    The model is put in eval mode for the call (dropout off) and its previous mode restored.
    """
    encoded = prompt_format.encode(tokenizer, list(prompts))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    padding = pad_id(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            input_ids = pad([encoded[i] for i in rows], padding, "left").to(device)  # (B, P)
            attention_mask = pad([[1] * len(encoded[i]) for i in rows], 0, "left").to(device)
            with torch.no_grad():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=padding,
                    eos_token_id=tokenizer.eos_token_id,
                )  # (B, P + N)
            new_tokens = output[:, input_ids.shape[1]:]
            for i, text in zip(rows, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                texts[i] = text.strip()
    finally:
        model.train(was_training)
    return texts
