"""Where the time of a SmolLM2-135M QLoRA training step goes: a breakdown from the PyTorch profiler.

    python benchmarks/qlora_profile.py [--candidate qlora|lora|hf-qlora|hf-lora|qlora-plain|lora-plain] [--steps 3]
        [--threads 2]
        [--gradient-checkpointing] [--peftlab-src DIR] [--json out.json]

The step of `smollm2_step.py` (batch 4 x 128, r=16, alpha=32 on every block linear, AdamW; peftlab's
loss as `peftlab train` takes it, ``-plain`` as ``model(**batch).loss``). After
two warm-up steps, `--steps` steps run under ``torch.profiler`` (CPU, shapes recorded) inside
three ranges: forward, backward, optimizer. Every op's *self* CPU time goes to one category:

  dequantization   anything inside the 4-bit weight decoding (peftlab's ``dequantize_into`` /
                   ``nf4_matvec`` or the old ``dequantize_range``, bitsandbytes' ``dequantize_4bit``):
                   the benchmark wraps whichever exists in a profiler range
  base matmuls     mm / addmm / bmm without an r-sized or vocabulary-sized dimension
  LoRA matmuls     mm / addmm with a dimension equal to r (the A and B products and their gradients)
  LM head + loss   every op on a vocabulary-sized tensor: the head's matmuls, log-softmax, NLL and
                   their gradients' fills, or the fused head's softmax passes
  attention        the scaled-dot-product attention kernels
  optimizer        everything in ``optimizer.step`` / ``zero_grad``
  other ops        norms, activations, rotary embeddings, elementwise (LoRA's scaling and sums
                   among them when they are separate ops), copies, reductions
  framework        the phase's wall time minus its ops' self times: Python, module calls, the
                   autograd engine, the profiler's own cost

Times are per step, under the profiler (which adds a few microseconds per op), so the table
gives proportions; the unprofiled median step time is printed beside them. Gradient
checkpointing's cost shows as the difference between a run with ``--gradient-checkpointing`` and
one without (its recomputed forward ops land in the backward range). ``--peftlab-src`` profiles
another checkout's ``src`` (e.g. the code before a change: ``git archive <commit> src | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

CATEGORIES = ("dequantization", "base matmuls", "LoRA matmuls", "LM head + loss", "attention", "optimizer",
              "other ops", "framework")
# (module, function) pairs that decode 4-bit weights, in peftlab (now and before issue 20) and
# bitsandbytes; each that exists is wrapped in a profiler range named DEQUANT_RANGE.
DEQUANT_FUNCTIONS = (("peftlab.quant.linear4bit", "dequantize_into"), ("peftlab.quant.linear4bit", "nf4_matvec"),
                     ("peftlab.quant.linear4bit", "dequantize_range"), ("bitsandbytes.functional", "dequantize_4bit"),
                     ("bitsandbytes.autograd._functions", "dequantize_4bit"))
DEQUANT_RANGE = "bench::dequantize"
PHASES = ("forward", "backward", "optimizer")
MATMULS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm"}
VOCABULARY = 49152
RANK = 16


def wrap_dequantization() -> list[str]:
    """Wrap every decoding function that exists in a profiler range; return the wrapped names."""
    import torch

    wrapped = []
    for module_name, attribute in DEQUANT_FUNCTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        original = getattr(module, attribute, None)
        if original is None:
            continue

        def traced(*args, __original=original, **kwargs):
            with torch.profiler.record_function(DEQUANT_RANGE):
                return __original(*args, **kwargs)

        setattr(module, attribute, functools.wraps(original)(traced))
        wrapped.append(f"{module_name}.{attribute}")
    return wrapped


def category(event, phase: str) -> str:
    """The category of one profiled op (see the module docstring)."""
    node = event
    while node is not None:
        if node.name == DEQUANT_RANGE:
            return "dequantization"
        node = node.cpu_parent
    if phase == "optimizer":
        return "optimizer"
    dims = {d for shape in (event.input_shapes or []) if isinstance(shape, list) for d in shape}
    if VOCABULARY in dims:
        return "LM head + loss"
    if event.name in MATMULS:
        return "LoRA matmuls" if RANK in dims else "base matmuls"
    if "log_softmax" in event.name or "nll_loss" in event.name:
        return "LM head + loss"
    if "attention" in event.name:
        return "attention"
    return "other ops"


def breakdown(profile, steps: int) -> dict:
    """ms per step by category and phase, op and autograd-node counts per step."""
    per_category = collections.Counter()
    per_phase: dict[str, collections.Counter] = {phase: collections.Counter() for phase in PHASES}
    phase_wall = collections.Counter()
    ops = nodes = 0
    for event in profile.events():
        if event.name.startswith("phase: "):
            phase_wall[event.name.removeprefix("phase: ")] += event.cpu_time_total / 1e3
            continue
        phase = None
        parent = event.cpu_parent
        while parent is not None and phase is None:
            if parent.name.startswith("phase: "):
                phase = parent.name.removeprefix("phase: ")
            parent = parent.cpu_parent
        if phase is None:
            continue
        if event.name.startswith("autograd::engine::evaluate_function"):
            nodes += 1
        elif event.name.startswith("aten::"):
            ops += 1
        name = category(event, phase)
        per_category[name] += event.self_cpu_time_total / 1e3
        per_phase[phase][name] += event.self_cpu_time_total / 1e3
    for phase in PHASES:
        framework = phase_wall[phase] - sum(per_phase[phase].values())
        per_phase[phase]["framework"] += framework
        per_category["framework"] += framework
    return {"ms_per_step": {name: per_category[name] / steps for name in CATEGORIES},
            "phase_ms_per_step": {phase: phase_wall[phase] / steps for phase in PHASES},
            "aten_ops_per_step": ops / steps, "autograd_nodes_per_step": nodes / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidate", default="qlora", choices=("qlora", "lora", "hf-qlora", "hf-lora", "qlora-plain", "lora-plain"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timed-steps", type=int, default=5, help="unprofiled steps for the median step time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peftlab-src", type=Path, help="import peftlab from this src folder instead")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.peftlab_src:
        sys.path.insert(0, str(args.peftlab_src.resolve()))
    sys.path.insert(0, str(Path(__file__).parent))
    import torch

    import peftlab
    from common import load_average
    from smollm2_step import ALL_LINEARS, FLOAT_CANDIDATES, build, load_base, smollm2_batch, step_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    wrapped = wrap_dequantization()
    model, params = build(args.candidate, ALL_LINEARS, load_base() if args.candidate in FLOAT_CANDIDATES else None)
    if args.gradient_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model.model
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch, loss_of = smollm2_batch(), step_loss(args.candidate, model)
    model.train()

    def step() -> None:
        with torch.profiler.record_function("phase: forward"):
            loss = loss_of(model, batch)
        with torch.profiler.record_function("phase: backward"):
            loss.backward()
        with torch.profiler.record_function("phase: optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    before = load_average()
    durations = []
    for _ in range(args.timed_steps):
        started = time.perf_counter()
        step()
        durations.append(time.perf_counter() - started)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        for _ in range(args.steps):
            step()
    after = load_average()
    result = breakdown(profile, args.steps)
    result.update(candidate=args.candidate, peftlab=str(Path(peftlab.__file__).parent), wrapped=wrapped,
                  gradient_checkpointing=args.gradient_checkpointing, threads=args.threads,
                  step_median_ms=statistics.median(durations) * 1e3, step_ms=[d * 1e3 for d in durations],
                  load_before=before, load_after=after)
    total = sum(result["ms_per_step"].values())
    print(f"{args.candidate}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}, "
          f"{args.threads} threads, peftlab from {result['peftlab']}; load average {before} before, {after} after")
    print(f"unprofiled step: median {result['step_median_ms']:.0f} ms of {args.timed_steps}; profiled "
          f"{total:.0f} ms/step ({', '.join(f'{k} {v:.0f}' for k, v in result['phase_ms_per_step'].items())}); "
          f"{result['aten_ops_per_step']:.0f} aten ops, {result['autograd_nodes_per_step']:.0f} autograd nodes per step")
    print("| category | ms per step (profiled) | share |")
    print("| --- | ---: | ---: |")
    for name, value in result["ms_per_step"].items():
        print(f"| {name} | {value:.0f} | {value / total:.1%} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
