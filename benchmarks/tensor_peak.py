"""The measured tensor peak of a few training steps against `peftlab estimate`, for every method.

This is the memory figure `peftlab compare` reports, without the rest of a comparison: each
method (the comparison's literature settings) trains a few steps of its budget on the real model
and data with `TrainConfig.track_memory` (`peftlab.train.memory.TensorPeakTracker`: live tensor
bytes counted by storage, split into weights / gradients / optimizer / activations at the peak),
and the estimator is asked for the same batch shape (`compare/estimates.py`). Each method runs in
its own process, so one's allocations never show in another's count.

    python benchmarks/tensor_peak.py [--model minilm] [--data sst2] [--methods all] [--steps 6]
        [--batch-size 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def child(model: str, data: str, method: str, steps: int, batch_size: int) -> dict:
    import dataclasses

    import torch

    from peftlab.compare.estimates import estimate_method
    from peftlab.compare.plan import make_plan
    from peftlab.compare.runs import apply_method, load_base, load_compare_task, train_config
    from peftlab.models.loading import resolve_model_folder
    from peftlab.train import train

    torch.set_num_threads(2)
    plan = make_plan(model=model, data=data, methods=method, max_length=64)
    plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, batch_size=batch_size))
    planned = plan.method(method)
    task = load_compare_task(plan)
    loaded = load_base(plan, task, planned)
    peft_model = apply_method(plan, loaded.model, planned)
    settings = dataclasses.replace(train_config(plan, planned, task), max_steps=steps, track_memory=True)
    peak = train(peft_model, task, loaded.tokenizer, settings, progress=False, dev_examples=()).tensor_memory
    rows, tokens = peak["batch_shape"]
    estimate = estimate_method(plan, planned, resolve_model_folder(model), num_labels=task.num_labels or None,
                               batch_size=rows, seq_len=tokens, device="cpu")
    return {"method": method, "measured_mb": peak, "estimate_mb": estimate.get("memory_mb"),
            "estimate_error": estimate.get("error")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", default="sst2")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model, args.data, args.child, args.steps, args.batch_size)))
        return
    from peftlab.core.registry import method_names

    methods = method_names() if args.methods == "all" else args.methods.split(",")
    rows = []
    for method in methods:
        done = subprocess.run([sys.executable, __file__, "--child", method, "--model", args.model, "--data", args.data,
                               "--steps", str(args.steps), "--batch-size", str(args.batch_size)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| method | batch | measured peak MB (weights / grads / optimizer / activations) | estimate MB (same split) "
          "| estimate / measured |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        m, e = row["measured_mb"], row["estimate_mb"] or {}
        split = " / ".join(f"{m[f'{k}_mb']:.0f}" for k in ("weights", "gradients", "optimizer", "activations"))
        est = " / ".join(f"{e.get(k, 0):.0f}" for k in ("weights", "gradients", "optimizer", "activations"))
        ratio = f"{e['total'] / m['peak_mb']:.2f}" if e else row["estimate_error"]
        print(f"| {row['method']} | {'×'.join(map(str, m['batch_shape']))} | {m['peak_mb']:.0f} ({split}) | "
              f"{e.get('total', 0):.0f} ({est}) | {ratio} |")


if __name__ == "__main__":
    main()
