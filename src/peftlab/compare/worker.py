"""One phase of a comparison in a fresh process: `python -m peftlab.compare.worker SPEC OUT`.

Peak memory is a property of a whole process (RSS only grows), so each method trains in its
own interpreter and its peak belongs to it alone; a crash or an out-of-memory kill there costs
that method's row, not the comparison. SPEC is a JSON file:

    {"phase": "train", "plan": ComparePlan.to_dict(), "method": "lora",
     "adapter_dir": "...", "progress": true}
    {"phase": "timing", "plan": ..., "progress": true}          (see `peftlab.compare.timing`)
    {"phase": "sweep", "plan": ..., "method": "lora", "progress": true}  (`peftlab.compare.sweep`)

The worker writes its result (or {"error": {...}}) to OUT atomically and exits 0, or 1 when
the phase raised. Memory figures (MiB):

    runtime_rss_mb   RSS after importing torch/transformers, before the model loads
    loaded_rss_mb    RSS with the model loaded and the method applied
    peak_rss_mb      the process's peak RSS (getrusage), training and evaluation included
    training_mb      peak_rss_mb − runtime_rss_mb: what the model, the method and training add
    peak_gpu_mb      torch.cuda.max_memory_allocated during training (CUDA runs only)
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import psutil
import torch

import peftlab
from peftlab.compare.plan import ComparePlan, MethodPlan
from peftlab.compare.sweep import without_validation
from peftlab.models import load_base as load_method_base
from peftlab.data import load_task
from peftlab.data.tasks import CAUSAL_LM, CLASSIFICATION, Task
from peftlab.io import write_json
from peftlab.models import load_model
from peftlab.train import TrainConfig, evaluate, resolve_device, train
from peftlab.train.evaluate import make_collator


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_compare_task(plan: ComparePlan) -> Task:
    budget = plan.budget
    columns = {k: v for k, v in plan.columns.items() if v is not None}
    task = load_task(plan.data, max_train=budget.max_train, max_dev=budget.max_dev, **columns)
    if task.kind == CAUSAL_LM and budget.max_dev is None and budget.max_dev_prompts is not None:
        task = load_task(plan.data, max_train=budget.max_train, max_dev=budget.max_dev_prompts, **columns)
    return task


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
    """`method` on `model`, its adapter initialised from the plan's seed: a sweep's run at some rate
    and the reported run at that rate start from the same weights."""
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
    return {"name": task.name, "kind": task.kind, "num_labels": task.num_labels or None,
            "label_names": list(task.label_names), "train_rows": len(task.train), "dev_rows": len(task.dev)}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def run_training(plan: ComparePlan, method: MethodPlan, adapter_dir: Path, progress: bool) -> dict[str, Any]:
    """Train one method on the plan's budget; measure parameters, file size, memory, quality, merge."""
    runtime_rss = rss_mb()
    task = load_compare_task(plan)
    if plan.budget.tune_lr:  # the sweep's rows and order: the run repeats the sweep's chosen run
        task, _ = without_validation(task, plan.budget.validation_fraction, plan.seed)
    loaded = load_base(plan, task, method)
    base_total = sum(p.numel() for p in loaded.model.parameters())
    peft_model = apply_method(plan, loaded.model, method)
    trainable, total = peft_model.count_parameters()
    loaded_rss = rss_mb()
    settings = train_config(plan, method, task)
    device = resolve_device(settings.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train(peft_model, task, loaded.tokenizer, settings, progress=progress)
    peak = peak_rss_mb()

    folder = peftlab.save_adapter(peft_model, adapter_dir, "default")
    measured: dict[str, Any] = {
        # percent of the base model, as the seeds count it; total includes the adapter's tensors
        "params": {"trainable": trainable, "base": base_total, "total": total,
                   "percent": 100 * trainable / base_total},
        "adapter_file_bytes": folder_bytes(Path(folder)),
        "memory": {"runtime_rss_mb": runtime_rss, "loaded_rss_mb": loaded_rss, "peak_rss_mb": peak,
                   "training_mb": peak - runtime_rss, "peak_gpu_mb": result.peak_gpu_memory_mb},
        "quality": quality(task, result.final_metrics, result.history),
        "train": {"steps": result.steps, "examples_seen": result.examples_seen, "wall_s": result.wall_time_s,
                  "train_s": result.train_time_s, "eval_s": result.eval_time_s,
                  "in_run_step_ms": {k: v * 1000 for k, v in result.step_time.items() if k != "count"},
                  "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in result.history]},
        "merge_error": None,
        "task": task_facts(task),
    }
    if peft_model.method("default").capabilities.mergeable:
        measured["merge_error"] = merge_error(peft_model, inference_batch(plan, task, loaded.tokenizer, device))
    if task.dev and not result.final_metrics:
        measured["quality"] = quality(task, evaluate(peft_model, task, loaded.tokenizer), result.history)
    return measured


def quality(task: Task, metrics: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline dev metric (accuracy; ROUGE-L for generation, else perplexity) and all others."""
    if task.kind == CLASSIFICATION:
        metric = "accuracy"
    else:
        metric = "rouge_l" if "rouge_l" in metrics else "perplexity"
    plain = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return {"metric": metric, "value": plain.get(metric), "dev": plain, "dev_rows": len(task.dev),
            "final_train_loss": history[-1]["loss"] if history else None,
            "samples": metrics.get("samples", [])}


def main(argv: list[str] | None = None) -> int:
    from peftlab.compare.sweep import run_sweep
    from peftlab.compare.timing import run_timing

    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    spec = json.loads(Path(spec_path).read_text())
    plan = ComparePlan.from_dict(spec["plan"])
    if plan.threads:
        torch.set_num_threads(plan.threads)
    try:
        if spec["phase"] == "train":
            method = plan.method(spec["method"])
            result = run_training(plan, method, Path(spec["adapter_dir"]), spec.get("progress", False))
        elif spec["phase"] == "sweep":
            task = load_compare_task(plan)
            method = plan.method(spec["method"])
            result = run_sweep(plan, method, task, load_base(plan, task, method),
                               spec.get("progress", False))
        else:
            result = run_timing(plan, spec.get("progress", False))
    except Exception as error:  # noqa: BLE001 - any failure becomes this method's error row
        write_json(out_path, {"error": {"type": type(error).__name__, "message": str(error),
                                        "traceback": traceback.format_exc(limit=8)}})
        return 1
    write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
