"""One method's reported training run in a comparison (the "train" worker phase).

`run_training(plan, method, adapter_dir)` trains `method` on the plan's budget and measures what
the report shows about it (the interleaved timing is `timing.py`'s):

    params              trainable / base / total counts (percent of the base, as the seeds count)
    adapter_file_bytes  the saved adapter folder
    memory              tensor_peak: peak live tensor bytes over the training steps, split into
                        weights / gradients / optimizer / activations (`train.memory`), with the
                        batch shape of the peak step: what `peftlab estimate` predicts;
                        peak_rss_mb etc.: the whole process (see `worker.py`)
    quality             the dev metrics and what every dev unit contributed (`per_example`), from
                        which `compare/quality.py` computes intervals and paired differences
    train               steps, examples, times, loss history
    merge_error         max |logits(merged) − logits(unmerged)| where the method merges
    lr_choice           (quick profile, first seed) the learning-rate probe this run began with

In the quick profile the first seed's run starts with the learning-rate probe
(`lr_choice.run_probe`): the candidates train the start of the budget one after the other, and
the run continues the winner from its checkpoint, so it is exactly the run at the chosen rate.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

import peftlab
from peftlab.compare.lr_choice import run_probe
from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.compare.runs import (apply_method, folder_bytes, inference_batch, load_base, load_compare_task,
                                  merge_error, rss_mb, task_facts, train_config, without_validation)
from peftlab.core.model import model_parameter_count
from peftlab.data.tasks import CLASSIFICATION, Task
from peftlab.train import TrainConfig, evaluate, resolve_device, train
from peftlab.train.runtime import peak_rss_mb


def dev_metrics(peft_model, task: Task, tokenizer, settings: TrainConfig) -> dict[str, Any]:
    """The final dev evaluation with what each dev unit contributed (for the intervals)."""
    return evaluate(peft_model, task, tokenizer, batch_size=settings.eval_batch_size,
                    max_length=settings.max_length, bf16=settings.bf16, chat=settings.chat,
                    generate=settings.generate, max_new_tokens=settings.max_new_tokens, per_example=True)


def quality(task: Task, metrics: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline dev metric (accuracy; ROUGE-L for generation, else perplexity) and all others."""
    if task.kind == CLASSIFICATION:
        metric = "accuracy"
    else:
        metric = "rouge_l" if "rouge_l" in metrics else "perplexity"
    plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return {"metric": metric, "value": plain.get(metric), "dev": plain, "dev_rows": len(task.dev),
            "first_train_loss": history[0]["loss"] if history else None,
            "final_train_loss": history[-1]["loss"] if history else None,
            "samples": metrics.get("samples", []), "per_example": metrics.get("per_example"),
            "per_prompt": metrics.get("per_prompt")}


def run_training(plan: ComparePlan, method: MethodPlan, adapter_dir: Path, progress: bool,
                 seed: int | None = None) -> dict[str, Any]:
    """Train one method on the plan's budget with `seed` (default: the plan's); measure
    parameters, file size, memory, quality and merge error."""
    runtime_rss = rss_mb()
    task = load_compare_task(plan)
    if plan.budget.tune_lr:
        # the rows the rate was chosen on minus its validation split, carved with the plan's own
        # seed for every run seed: the first seed's run repeats the chosen run step for step
        task, _ = without_validation(task, plan.budget.validation_fraction, plan.seed)
    first_seed = seed is None or seed == plan.seed
    plan = dataclasses.replace(plan, seed=plan.seed if seed is None else seed)
    loaded = load_base(plan, task, method)
    with tempfile.TemporaryDirectory(prefix="peftlab-probe-") as scratch:
        probe = None
        if plan.budget.lr_choice == "probe" and first_seed and method.sweep is None:
            probe = run_probe(plan, method, load_compare_task(plan), loaded, progress, Path(scratch))
            method = dataclasses.replace(method, learning_rate=probe["chosen"] or method.learning_rate, sweep=probe)
        measured = _train_and_measure(plan, method, task, loaded, adapter_dir, progress, runtime_rss,
                                      resume=(method.sweep or {}).get("resume_from") if first_seed else None)
    # The probe's checkpoints lived in a scratch folder that is gone now: keep its findings only.
    measured["lr_choice"] = probe and {**{k: v for k, v in probe.items() if k != "resume_from"},
                                       "points": [{k: v for k, v in p.items() if k != "checkpoint"}
                                                  for p in probe["points"]]}
    return measured


def _train_and_measure(plan: ComparePlan, method: MethodPlan, task: Task, loaded, adapter_dir: Path,
                       progress: bool, runtime_rss: float, resume: str | None) -> dict[str, Any]:
    base_total = model_parameter_count(loaded.model)  # a 4-bit base counts its weights, not its codes
    peft_model = apply_method(plan, loaded.model, method)
    trainable, total = peft_model.count_parameters()
    loaded_rss = rss_mb()
    settings = dataclasses.replace(train_config(plan, method, task), track_memory=True)
    device = resolve_device(settings.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # The first seed continues the winning learning-rate probe where it stopped (the same run).
    result = train(peft_model, task, loaded.tokenizer, settings, progress=progress, dev_examples=(),
                   resume_from=resume if resume and Path(resume).is_dir() else None)
    peak = peak_rss_mb()
    metrics = dev_metrics(peft_model, task, loaded.tokenizer, settings) if task.dev else {}

    folder = peftlab.save_adapter(peft_model, adapter_dir, "default")
    measured: dict[str, Any] = {
        # percent of the base model, as the seeds count it; total includes the adapter's tensors
        "params": {"trainable": trainable, "base": base_total, "total": total,
                   "percent": 100 * trainable / base_total},
        "adapter_file_bytes": folder_bytes(Path(folder)),
        "memory": {"tensor_peak": result.tensor_memory, "runtime_rss_mb": runtime_rss,
                   "loaded_rss_mb": loaded_rss, "peak_rss_mb": peak, "training_mb": peak - runtime_rss,
                   "peak_gpu_mb": result.peak_gpu_memory_mb},
        "quality": quality(task, metrics, result.history),
        "train": {"steps": result.steps, "examples_seen": result.examples_seen, "wall_s": result.wall_time_s,
                  "train_s": result.train_time_s, "eval_s": result.eval_time_s,
                  "in_run_step_ms": {k: v * 1000 for k, v in result.step_time.items() if k != "count"},
                  "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in result.history]},
        "merge_error": None,
        "task": task_facts(task),
        "seed": plan.seed,
        "learning_rate": method.learning_rate,
    }
    if peft_model.method("default").capabilities.mergeable:
        measured["merge_error"] = merge_error(peft_model, inference_batch(plan, task, loaded.tokenizer, device))
    return measured


def zero_shot(plan: ComparePlan) -> dict[str, Any]:
    """The base model scored on the dev set without any training: the floor a generation method
    must rise above to have learned (classification uses the majority class instead)."""
    task = load_compare_task(plan)
    loaded = load_base(plan, task)
    settings = train_config(plan, plan.methods[0], task)
    loaded.model.to(resolve_device(settings.device))
    return {"quality": {**quality(task, dev_metrics(loaded.model, task, loaded.tokenizer, settings), []),
                        "name": "the base model without training (zero-shot)"}}
