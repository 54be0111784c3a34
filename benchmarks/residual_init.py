"""Initialisation time of PiSSA (full SVD) and OLoRA (QR) on one 4096 × 4096 linear layer.

    python benchmarks/residual_init.py [--size 4096] [--r 16] [--repeats 3] [--threads 2] [--hf]

Each candidate applies the method to a fresh copy of one float32 nn.Linear(size, size) (the init
factors W and writes the residual back, so it is the whole cost of `peftlab.apply`); candidates run
round-robin in one process, rotating the order. With --hf, Hugging Face PEFT's own
`init_lora_weights="pissa"` / `"olora"` on the same layer is timed beside them. Both the wall time
and the process's CPU time are recorded per call: on a shared machine the wall time of a long
LAPACK call varies with the neighbours' load, its CPU time much less.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from common import summarize  # noqa: E402

import peftlab  # noqa: E402


def ours(method: str, layer: nn.Module, r: int):
    def run() -> None:
        peftlab.apply(nn.Sequential(copy.deepcopy(layer)),
                      peftlab.make_config(method, r=r, alpha=float(r), target_modules=("0",), modules_to_save=()))
    return run


def theirs(method: str, layer: nn.Module, r: int):
    import peft

    def run() -> None:
        peft.get_peft_model(nn.Sequential(copy.deepcopy(layer)),
                            peft.LoraConfig(r=r, lora_alpha=r, target_modules=["0"], init_lora_weights=method))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hf", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = nn.Linear(args.size, args.size, bias=False)
    candidates = {}
    for method in ("pissa", "olora"):
        candidates[f"peftlab {method}"] = ours(method, layer, args.r)
        if args.hf:
            candidates[f"HF PEFT {method}"] = theirs(method, layer, args.r)
    print(f"load average before: {os.getloadavg()}")
    wall: dict[str, list[float]] = {name: [] for name in candidates}
    cpu: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print(f"init of a {args.size} x {args.size} float32 linear, r={args.r}, {args.threads} threads, "
          f"{args.repeats} interleaved repeats; load average after: {os.getloadavg()}")
    for name in names:
        w, c = summarize(wall[name]), summarize(cpu[name])
        print(f"{name:<16} wall median {w['median']:7.2f} s IQR [{w['q1']:6.2f}, {w['q3']:6.2f}]   "
              f"CPU median {c['median']:7.2f} s IQR [{c['q1']:6.2f}, {c['q3']:6.2f}]")


if __name__ == "__main__":
    main()
