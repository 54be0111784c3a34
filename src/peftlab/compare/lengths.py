"""Fitting `max_length` to the data, so no row is cut without the report saying so.

A fixed `max_length` truncates silently: sentence pairs and long texts lose the part that holds
the answer, and every method then sits at chance for a reason that has nothing to do with it.
Batches are padded to their own longest row (never to `max_length`), so a generous limit only
costs the batches that hold long rows. The comparison therefore takes the longest row it will
see, training or dev, as tokenised for the model (both texts of a pair, special tokens, the
prompt and target of a causal-LM row), rounded up to a multiple of 8 and capped at the
profile's `max_length_cap`:

    max_length = min(cap, 8 · ⌈longest / 8⌉)

and reports how many rows exceed it (only rows longer than the cap, or than an explicit
`--max-length`). Only the inputs are read, never a dev label.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from peftlab.data.collators import PromptFormat
from peftlab.data.tasks import CLASSIFICATION, Task

ROUND_TO = 8
TRUNCATION_WARNING = 0.02  # share of rows cut above which the report warns
PADDING_SAMPLES = 64       # seeded batches drawn to average the padded length of a batch


def token_lengths(task: Task, tokenizer, rows: Sequence) -> list[int]:
    """Tokens of each row as the collator builds it (before truncation)."""
    if not rows:
        return []
    if task.kind == CLASSIFICATION:
        texts = [row.text for row in rows]
        pairs = [row.text_pair for row in rows]
        encoded = tokenizer(texts, pairs if any(p is not None for p in pairs) else None)["input_ids"]
        return [len(ids) for ids in encoded]
    prompts = PromptFormat().encode(tokenizer, [row.prompt for row in rows])
    targets = tokenizer([row.target for row in rows], add_special_tokens=False)["input_ids"]
    return [len(p) + len(t) + 1 for p, t in zip(prompts, targets)]  # + end of sequence


def padded_length(lengths: Sequence[int], rows: int, limit: int) -> float:
    """Mean tokens per row of a batch of `rows` random rows padded to its longest (at most `limit`):
    what a step or an evaluation batch costs, far above the median row on short-text data."""
    if not lengths:
        return 0.0
    draw = random.Random(0)
    batches = [draw.choices(lengths, k=rows) for _ in range(PADDING_SAMPLES)]
    return sum(min(limit, max(batch)) for batch in batches) / PADDING_SAMPLES


def fit_max_length(task: Task, tokenizer, *, cap: int, given: int | None = None, batch_size: int = 16,
                   eval_batch_size: int = 64) -> dict[str, Any]:
    """{"max_length", "chosen_from_data", "longest", "train_truncated", "dev_truncated",
    "train_batch_length", "eval_batch_length", ...}; the batch lengths are `padded_length`s."""
    train, dev = token_lengths(task, tokenizer, task.train), token_lengths(task, tokenizer, task.dev)
    longest = max(train + dev)
    chosen = given if given is not None else min(cap, ROUND_TO * math.ceil(longest / ROUND_TO))
    cut_train, cut_dev = sum(n > chosen for n in train), sum(n > chosen for n in dev)
    share = (cut_train + cut_dev) / max(1, len(train) + len(dev))
    facts = {"max_length": chosen, "chosen_from_data": given is None, "cap": cap, "longest": longest,
             "median_train": sorted(train)[len(train) // 2], "train_rows": len(train), "dev_rows": len(dev),
             "train_truncated": cut_train, "dev_truncated": cut_dev, "truncated_share": share, "warning": None,
             "train_batch_length": padded_length(train, batch_size, chosen),
             "eval_batch_length": padded_length(dev, eval_batch_size, chosen)}
    if share > TRUNCATION_WARNING:
        facts["warning"] = (f"{share:.0%} of the rows ({cut_train} training, {cut_dev} dev) are longer than "
                            f"max_length {chosen} tokens and are cut (longest {longest}): raise --max-length "
                            f"if their ends matter")
    return facts
