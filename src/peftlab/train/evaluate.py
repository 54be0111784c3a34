"""Scoring a model (with or without adapters) on a task's dev set.

Classification:  loss, accuracy and macro-F1 over the dev rows.
Causal-LM:       loss and perplexity over the dev target tokens (the prompt is not scored), and,
                 when asked, BLEU / ROUGE-L of greedy generations against every reference of each
                 prompt, with a few sample outputs.

Losses are averaged over *items* (rows for classification, target tokens for causal-LM), so the
result does not depend on how the rows were batched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from peftlab.data.collators import IGNORE_INDEX, CausalLMCollator, ClassificationCollator, PromptFormat
from peftlab.data.generation import generate_texts
from peftlab.data.metrics import accuracy, generation_scores, macro_f1
from peftlab.data.tasks import CLASSIFICATION, Task, group_references


def make_collator(task: Task, tokenizer, max_length: int, chat: bool = False):
    """The collator for `task`'s kind (dynamic padding to each batch's longest row)."""
    if task.kind == CLASSIFICATION:
        return ClassificationCollator(tokenizer, max_length=max_length)
    return CausalLMCollator(tokenizer, max_length=max_length, prompt_format=PromptFormat(chat=chat))


def loss_items(labels: torch.Tensor) -> int:
    """How many items the model's mean loss averages over: rows for (B,) class labels, predicted
    target tokens for (B, T) token labels (HF causal LMs shift labels left by one)."""
    if labels.dim() == 1:
        return labels.numel()
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _dev_pass(model: nn.Module, examples: Sequence, collate, batch_size: int, bf16: bool) -> tuple[float, int, list[int]]:
    """(summed loss, items, predicted class per example in input order) over `examples`."""
    device = model_device(model)
    # Length-sorted batches pad less; predictions are put back in the caller's order.
    order = sorted(range(len(examples)), key=lambda i: len(getattr(examples[i], "text", "")
                                                           or getattr(examples[i], "prompt", "")))
    predictions = [0] * len(examples)
    loss_sum, items = torch.zeros((), device=device), 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in rows]).items()}
        count = loss_items(batch["labels"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(**batch)
        if count:
            loss_sum += outputs.loss.float() * count
            items += count
        if batch["labels"].dim() == 1:
            for i, predicted in zip(rows, outputs.logits.argmax(-1).tolist()):
                predictions[i] = predicted
    return float(loss_sum), items, predictions


def evaluate(
    model: nn.Module,
    task: Task,
    tokenizer,
    *,
    examples: Sequence | None = None,
    batch_size: int = 64,
    max_length: int = 128,
    bf16: bool = False,
    chat: bool = False,
    generate: bool = False,
    max_new_tokens: int = 64,
    samples: int = 5,
) -> dict[str, Any]:
    """Metrics of `model` (a PeftModel or a plain HF model) on `examples` (default: the dev set).

    The model runs in eval mode (dropout off) on its own device; its previous mode is restored.
    `generate` (causal-LM only) adds BLEU / ROUGE-L of greedy decoding over the distinct prompts
    and `samples` example outputs.
    """
    examples = task.dev if examples is None else tuple(examples)
    if not examples:
        return {}
    collate = make_collator(task, tokenizer, max_length, chat)
    was_training = model.training
    model.eval()
    try:
        loss_sum, items, predictions = _dev_pass(model, examples, collate, batch_size, bf16)
    finally:
        model.train(was_training)
    loss = loss_sum / max(items, 1)
    if task.kind == CLASSIFICATION:
        labels = [ex.label for ex in examples]
        return {"loss": loss, "accuracy": accuracy(predictions, labels),
                "macro_f1": macro_f1(predictions, labels, task.num_labels), "examples": len(examples)}
    metrics: dict[str, Any] = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": items}
    if generate:
        metrics.update(generation_metrics(model, tokenizer, examples, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, chat=chat, samples=samples))
    return metrics


def generation_metrics(model: nn.Module, tokenizer, examples: Sequence, *, max_new_tokens: int,
                       batch_size: int, chat: bool, samples: int) -> dict[str, Any]:
    """BLEU / ROUGE-L of greedy outputs, one per distinct prompt, against all its references."""
    groups = group_references(examples)
    outputs = generate_texts(model, tokenizer, [g.prompt for g in groups], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, prompt_format=PromptFormat(chat=chat))
    scores = generation_scores(outputs, [g.references for g in groups])
    shown = [{"prompt": g.prompt, "output": out, "references": list(g.references[:3])}
             for g, out in zip(groups[:samples], outputs)]
    return {**scores, "prompts": len(groups), "samples": shown}
