"""peftlab NF4 Linear4bit vs bitsandbytes' 4-bit linear vs float32 nn.Linear, on CPU.

Same 4096x4096 weight for all (bitsandbytes: ``bnb.nn.Linear4bit``, nf4, double quant, compute
dtype float32). Cases: 256 tokens and 1 token; forward under ``no_grad`` (inference:
bitsandbytes takes its fused CPU gemv kernel for one token) and forward+backward w.r.t. the
input (training: the frozen base under a LoRA adapter). Candidates: peftlab with the kernels it
picks (native C loops where a C compiler works), peftlab forced onto the eager kernels
(``PEFTLAB_NF4_KERNELS=eager``), bitsandbytes, float32. Each repeat runs every candidate once,
round-robin with a rotating start (``common.interleaved``), so load from other processes hits
all of them alike; we report the median and the IQR over repeats, and ratios of medians, with
the load average before and after each case. ``--clock cpu`` times process CPU time instead of
wall time: with one thread it measures the work itself, unaffected by other jobs.

    python benchmarks/nf4_linear.py --threads 2 --repeats 31
    python benchmarks/nf4_linear.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from peftlab.quant import Linear4bit

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved, load_average, summarize  # noqa: E402


def build(size: int, block_size: int) -> dict[str, torch.nn.Module]:
    """The implementations of one (size, size) linear layer, with the same weights."""
    import bitsandbytes as bnb  # benchmark oracle only, never imported by peftlab itself

    torch.manual_seed(0)
    dense = torch.nn.Linear(size, size).requires_grad_(False)
    ours = Linear4bit.from_linear(dense, block_size=block_size)
    theirs = bnb.nn.Linear4bit(size, size, compute_dtype=torch.float32, quant_type="nf4",
                               compress_statistics=True)
    theirs.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True, blocksize=block_size)
    theirs.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    return {"peftlab": ours, "peftlab eager": ours, "bitsandbytes": theirs.to("cpu"), "float32": dense}


def candidate(name: str, layer: torch.nn.Module, x: torch.Tensor, backward: bool):
    """One call of `layer` on `x` (forward, or forward + backward to x) as a timing candidate."""
    def step() -> None:
        if backward:
            x.grad = None
            layer(x).sum().backward()
        else:
            with torch.no_grad():
                layer(x)

    if name != "peftlab eager":
        return step

    def eager_step() -> None:  # the kernel choice is read on every call
        os.environ["PEFTLAB_NF4_KERNELS"] = "eager"
        try:
            step()
        finally:
            del os.environ["PEFTLAB_NF4_KERNELS"]
    return eager_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--cases", default="256 fwd,1 fwd,256 fwd+bwd,1 fwd+bwd",
                        help="comma-separated '<tokens> fwd' or '<tokens> fwd+bwd'")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = build(args.size, args.block_size)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"# {args.size}x{args.size}, block {args.block_size}, {args.threads} threads, {args.repeats} interleaved "
          f"repeats, {args.clock} clock, torch {torch.__version__}")
    print("| case | impl | median ms | IQR ms | vs bitsandbytes | vs float32 | load avg before / after |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    results = {}
    for case in args.cases.split(","):
        tokens, kind = case.split()
        backward = kind == "fwd+bwd"
        x = torch.randn(int(tokens), args.size, requires_grad=backward)
        before = load_average()
        times = interleaved({name: candidate(name, layer, x, backward) for name, layer in layers.items()},
                            repeats=args.repeats, warmup=2, clock=clock)
        after = load_average()
        stats = {name: summarize([t * 1e3 for t in samples]) for name, samples in times.items()}
        for name, row in stats.items():
            print(f"| {case} | {name} | {row['median']:.1f} | {row['q1']:.1f}–{row['q3']:.1f} | "
                  f"{row['median'] / stats['bitsandbytes']['median']:.2f}x | "
                  f"{row['median'] / stats['float32']['median']:.2f}x | {before} / {after} |", flush=True)
        results[case] = {"stats_ms": stats, "load_before": before, "load_after": after}
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2))


if __name__ == "__main__":
    main()
