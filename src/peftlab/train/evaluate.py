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
from peftlab.data.metrics import (accuracy, bleu_statistics, generation_scores, macro_f1,
                                  rouge_l_per_hypothesis)
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


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a causal-LM batch: (summed next-token loss, scored tokens), each (B,).

    logits (B, T, V) and labels (B, T) with IGNORE_INDEX where nothing is scored; position t
    predicts label t + 1, as in the models' own loss."""
    shifted = labels[:, 1:]
    losses = nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), shifted,
                                         ignore_index=IGNORE_INDEX, reduction="none")  # (B, T-1)
    return losses.sum(dim=1), (shifted != IGNORE_INDEX).sum(dim=1)


@torch.no_grad()
def _dev_pass(model: nn.Module, examples: Sequence, collate, batch_size: int, bf16: bool,
              per_row: bool = False) -> tuple[float, int, list[int], list[tuple[float, int]]]:
    """(summed loss, items, predicted class per example, per-row (loss sum, tokens)) over `examples`.

    Predictions and per-row losses are in input order; the per-row losses (causal-LM, with
    `per_row`) are what a bootstrap of perplexity resamples."""
    device = model_device(model)
    # Length-sorted batches pad less; predictions are put back in the caller's order.
    order = sorted(range(len(examples)), key=lambda i: len(getattr(examples[i], "text", "")
                                                           or getattr(examples[i], "prompt", "")))
    predictions = [0] * len(examples)
    row_losses: list[tuple[float, int]] = [(0.0, 0)] * len(examples) if per_row else []
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
        elif per_row:
            sums, tokens = token_losses(outputs.logits, batch["labels"])
            for i, summed, scored in zip(rows, sums.tolist(), tokens.tolist()):
                row_losses[i] = (summed, scored)
    return float(loss_sum), items, predictions, row_losses


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
    per_example: bool = False,
) -> dict[str, Any]:
    """Metrics of `model` (a PeftModel or a plain HF model) on `examples` (default: the dev set).

    The model runs in eval mode (dropout off) on its own device; its previous mode is restored.
    `generate` (causal-LM only) adds BLEU / ROUGE-L of greedy decoding over the distinct prompts
    and `samples` example outputs. `per_example` adds what each dev unit contributed, for
    intervals (`peftlab.compare.stats`): {"predictions", "labels"} (classification), or
    {"loss_sum", "tokens"} per dev row (causal-LM) and, with `generate`, `per_prompt`: {"outputs",
    "rouge_l", "bleu_statistics"} per distinct prompt.
    """
    examples = task.dev if examples is None else tuple(examples)
    if not examples:
        return {}
    collate = make_collator(task, tokenizer, max_length, chat)
    was_training = model.training
    model.eval()
    try:
        loss_sum, items, predictions, row_losses = _dev_pass(model, examples, collate, batch_size, bf16,
                                                             per_row=per_example)
    finally:
        model.train(was_training)
    loss = loss_sum / max(items, 1)
    if task.kind == CLASSIFICATION:
        labels = [ex.label for ex in examples]
        metrics = {"loss": loss, "accuracy": accuracy(predictions, labels),
                   "macro_f1": macro_f1(predictions, labels, task.num_labels), "examples": len(examples)}
        if per_example:
            metrics["per_example"] = {"predictions": predictions, "labels": labels}
        return metrics
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": items}
    if per_example:
        metrics["per_example"] = {"loss_sum": [r[0] for r in row_losses], "tokens": [r[1] for r in row_losses]}
    if generate:
        metrics.update(generation_metrics(model, tokenizer, examples, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, chat=chat, samples=samples,
                                          per_example=per_example))
    return metrics


def generation_metrics(model: nn.Module, tokenizer, examples: Sequence, *, max_new_tokens: int,
                       batch_size: int, chat: bool, samples: int, per_example: bool = False) -> dict[str, Any]:
    """BLEU / ROUGE-L of greedy outputs, one per distinct prompt, against all its references
    (with `per_example`, each prompt's output, ROUGE-L and BLEU statistics go into
    `metrics["per_example"]` beside the per-row losses)."""
    groups = group_references(examples)
    outputs = generate_texts(model, tokenizer, [g.prompt for g in groups], max_new_tokens=max_new_tokens,
                             batch_size=batch_size, prompt_format=PromptFormat(chat=chat))
    references = [g.references for g in groups]
    scores = generation_scores(outputs, references)
    shown = [{"prompt": g.prompt, "output": out, "references": list(g.references[:3])}
             for g, out in zip(groups[:samples], outputs)]
    metrics: dict[str, Any] = {**scores, "prompts": len(groups), "samples": shown}
    if per_example:
        metrics["per_prompt"] = {"outputs": outputs, "rouge_l": rouge_l_per_hypothesis(outputs, references),
                                 "bleu_statistics": bleu_statistics(outputs, references)}
    return metrics
