"""What every worker phase of a comparison shares: the task, the base model, the seeded method,
the training settings of the plan's budget, the fixed batches, and small measurements.

The plan's seed seeds the new head (`load_base`) and the adapter (`apply_method`); with the
training settings (`train_config`) it also seeds the data order and dropout, so a run with
another seed (`--seeds N`) varies all four.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import psutil
import torch

import peftlab
from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.data import load_task
from peftlab.data.tasks import CAUSAL_LM, CLASSIFICATION, Task
from peftlab.models import load_base as load_method_base
from peftlab.models import load_model
from peftlab.train import TrainConfig
from peftlab.train.evaluate import make_collator


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def load_compare_task(plan: ComparePlan) -> Task:
    budget = plan.budget
    columns = {k: v for k, v in plan.columns.items() if v is not None}
    held_out = {"dev_fraction": plan.dev_fraction, "dev_seed": 0}
    task = load_task(plan.data, max_train=budget.max_train, max_dev=budget.max_dev, **held_out, **columns)
    if task.kind == CAUSAL_LM and budget.max_dev is None and budget.max_dev_prompts is not None:
        task = load_task(plan.data, max_train=budget.max_train, max_dev=budget.max_dev_prompts, **held_out, **columns)
    return task


def without_validation(task: Task, fraction: float, seed: int) -> tuple[Task, tuple]:
    """(the task with its training rows minus a validation split, the validation rows).

    Learning-rate choices score on this split; the reported runs of a comparison that chose its
    rates train on the same rows, so the validation rows stay held out from every model.
    """
    rest, validation = task.split_validation(fraction, seed)
    return dataclasses.replace(task, train=rest), validation


def load_base(plan: ComparePlan, task: Task, method: MethodPlan | None = None):
    """The base model, its new head initialised from the plan's seed (identical for every method).

    With `method`, loaded the way that method declares (`Method.load_base`): QLoRA's base goes
    straight into NF4, so its process never holds the float block linears and its peak memory is
    its own. The timing phase shares one float base among all methods (`method=None`).
    """
    torch.manual_seed(plan.seed)
    num_labels = task.num_labels if task.kind == CLASSIFICATION else None
    if method is None:
        return load_model(plan.model, task.kind, num_labels=num_labels)
    return load_method_base(plan.model, task.kind, num_labels, method_config(method))


def _from_json(value: Any) -> Any:
    """JSON has lists where configs take tuples (target names, layer indices); a combination's
    fields are one dict per part."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def method_config(method: MethodPlan):
    return peftlab.make_config(method.method, **_from_json(method.fields))


def apply_method(plan: ComparePlan, model: torch.nn.Module, method: MethodPlan) -> peftlab.PeftModel:
    """`method` on `model`, its adapter initialised from the plan's seed: a run choosing the
    learning rate and the reported run at that rate start from the same weights."""
    torch.manual_seed(plan.seed)
    return peftlab.apply(model, method_config(method))


def train_config(plan: ComparePlan, method: MethodPlan, task: Task) -> TrainConfig:
    budget = plan.budget
    return TrainConfig(learning_rate=method.learning_rate, max_steps=budget.steps, batch_size=budget.batch_size,
                       warmup_ratio=budget.warmup_ratio, seed=plan.seed, max_length=budget.max_length,
                       eval_batch_size=budget.eval_batch_size, num_threads=plan.threads, device=plan.device,
                       generate=budget.generate and task.kind == CAUSAL_LM,
                       max_new_tokens=budget.max_new_tokens, log_every=5)


def inference_batch(plan: ComparePlan, task: Task, tokenizer, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed batch of the first `latency_batch` dev rows (training rows without a dev set), no labels."""
    rows = (task.dev or task.train)[:plan.budget.latency_batch]
    batch = make_collator(task, tokenizer, plan.budget.max_length)(list(rows))
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def merge_error(peft_model, batch: dict[str, torch.Tensor]) -> float:
    """max |logits(merged) − logits(unmerged)| on `batch`, in eval mode; the model is left unmerged."""
    peft_model.eval()
    unmerged = peft_model(**batch).logits.float()
    peft_model.merge()
    try:
        merged = peft_model(**batch).logits.float()
    finally:
        peft_model.unmerge()
    return float((merged - unmerged).abs().max())


def task_facts(task: Task) -> dict[str, Any]:
    """What the report says about the data; `train_label_counts` gives the majority-class baseline."""
    facts = {"name": task.name, "kind": task.kind, "num_labels": task.num_labels or None,
             "label_names": list(task.label_names), "train_rows": len(task.train), "dev_rows": len(task.dev),
             "dev_origin": task.dev_origin}
    if task.kind == CLASSIFICATION:
        facts["train_label_counts"] = [sum(ex.label == i for ex in task.train) for i in range(task.num_labels)]
    return facts


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
