"""One phase of a comparison in a fresh process: `python -m peftlab.compare.worker SPEC OUT`.

Each method's run gets its own interpreter, so its peak RSS belongs to it alone and a crash or
an out-of-memory kill costs that run, not the comparison. SPEC is a JSON file:

    {"phase": "train", "plan": ComparePlan.to_dict(), "method": "lora", "seed": 0,
     "adapter_dir": "...", "progress": true}                         (`training.run_training`)
    {"phase": "lr", "plan": ..., "method": "lora", "progress": true}  (`lr_choice.choose_rate`)
    {"phase": "timing", "plan": ..., "progress": true}               (`timing.run_timing`)
    {"phase": "baseline", "plan": ...}                               (`training.zero_shot`)

The worker writes its result (or {"error": {...}}) to OUT atomically and exits 0, or 1 when
the phase raised. Memory figures of a training run (MiB):

    tensor_peak      peak live tensor bytes over the training steps and their split
                     (`peftlab.train.memory`): what `peftlab estimate` predicts
    runtime_rss_mb   RSS after importing torch/transformers, before the model loads
    loaded_rss_mb    RSS with the model loaded and the method applied
    peak_rss_mb      the process's peak RSS (getrusage): runtime, model loading, training and the
                     dev evaluation, under glibc's default allocator (freed blocks are kept for
                     reuse; returning them at once left the peak unchanged and made steps 1.7x
                     slower, BENCHMARKS.md)
    training_mb      peak_rss_mb − runtime_rss_mb
    peak_gpu_mb      torch.cuda.max_memory_allocated during training (CUDA runs only)
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

from peftlab.compare.lr_choice import choose_rate
from peftlab.compare.plan import ComparePlan
from peftlab.compare.training import run_training, zero_shot
from peftlab.compare.timing import run_timing
from peftlab.io import write_json


def run_phase(spec: dict) -> dict:
    plan = ComparePlan.from_dict(spec["plan"])
    if plan.threads:
        torch.set_num_threads(plan.threads)
    progress = spec.get("progress", False)
    if spec["phase"] == "train":
        return run_training(plan, plan.method(spec["method"]), Path(spec["adapter_dir"]), progress, spec.get("seed"))
    if spec["phase"] == "lr":
        return choose_rate(plan, plan.method(spec["method"]), progress)
    if spec["phase"] == "baseline":
        return zero_shot(plan)
    return run_timing(plan, progress)


def main(argv: list[str] | None = None) -> int:
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    try:
        result = run_phase(json.loads(Path(spec_path).read_text()))
    except Exception as error:  # noqa: BLE001 - any failure becomes this run's error row
        write_json(out_path, {"error": {"type": type(error).__name__, "message": str(error),
                                        "traceback": traceback.format_exc(limit=8)}})
        return 1
    write_json(out_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
