"""peftlab NF4 Linear4bit vs bitsandbytes' 4-bit linear vs float32 nn.Linear, on CPU.

Same 4096x4096 weight for all three (bitsandbytes: ``bnb.nn.Linear4bit``, nf4, double quant,
compute dtype float32). Cases: 256 tokens and 1 token; forward under ``no_grad`` (inference:
bitsandbytes takes its fused CPU gemv kernel for one token) and forward+backward w.r.t. the
input (training: the frozen base under a LoRA adapter). Each repeat runs every implementation
once, in turn, so that load from other processes hits all of them alike; we report the median
and the min..max over repeats, and ratios of medians. ``--clock cpu`` times process CPU time
instead of wall time: with one thread it measures the work itself, unaffected by other jobs.

    python benchmarks/nf4_linear.py --threads 2 --repeats 15
    python benchmarks/nf4_linear.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from peftlab.quant import Linear4bit


def build(size: int, block_size: int):
    """The three implementations of one (size, size) linear layer, with the same weights."""
    import bitsandbytes as bnb  # benchmark oracle only, never imported by peftlab itself

    torch.manual_seed(0)
    dense = torch.nn.Linear(size, size).requires_grad_(False)
    ours = Linear4bit.from_linear(dense, block_size=block_size)
    theirs = bnb.nn.Linear4bit(size, size, compute_dtype=torch.float32, quant_type="nf4",
                               compress_statistics=True)
    theirs.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True, blocksize=block_size)
    theirs.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    return {"peftlab": ours, "bitsandbytes": theirs.to("cpu"), "float32": dense}


def step(layer: torch.nn.Module, x: torch.Tensor, backward: bool) -> None:
    if backward:
        x.grad = None
        layer(x).sum().backward()
    else:
        with torch.no_grad():
            layer(x)


def run_case(layers: dict, tokens: int, backward: bool, repeats: int, size: int, clock) -> dict[str, list[float]]:
    x = torch.randn(tokens, size, requires_grad=backward)
    times: dict[str, list[float]] = {name: [] for name in layers}
    for layer in layers.values():  # warm-up: allocator, kernel selection
        step(layer, x, backward)
    for _ in range(repeats):
        for name, layer in layers.items():
            start = clock()
            step(layer, x, backward)
            times[name].append((clock() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layers = build(args.size, args.block_size)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"# {args.size}x{args.size}, block {args.block_size}, {args.threads} threads, {args.repeats} repeats, "
          f"{args.clock} clock, torch {torch.__version__}")
    print("| case | impl | median ms | min..max ms | vs bitsandbytes | vs float32 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for backward in (False, True):
        for tokens in (256, 1):
            times = run_case(layers, tokens, backward, args.repeats, args.size, clock)
            median = {name: statistics.median(t) for name, t in times.items()}
            case = f"{tokens} tok {'fwd+bwd' if backward else 'fwd'}"
            for name, t in times.items():
                print(f"| {case} | {name} | {median[name]:.1f} | {min(t):.1f}..{max(t):.1f} | "
                      f"{median[name] / median['bitsandbytes']:.2f}x | {median[name] / median['float32']:.2f}x |")


if __name__ == "__main__":
    main()
