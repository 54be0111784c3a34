"""SmolLM2-135M training step: full fine-tuning vs peftlab LoRA vs Hugging Face PEFT LoRA.

    python benchmarks/smollm2_step.py [--repeats 10] [--threads 2] [--part time,memory] [--json out.json]

One step = forward + backward + AdamW step on a batch of 4 x 128 random tokens (labels = inputs)
through the real SmolLM2-135M-Instruct causal LM, float32. LoRA: r=16, alpha=32 on q_proj and
v_proj, no dropout, for both libraries.

  time    the three candidates in ONE process, round-robin with a rotating order (common.interleaved);
          medians, IQRs and the ratios between medians measured side by side
  memory  each candidate in a fresh interpreter (peak RSS = ru_maxrss is per process): load the
          model, apply the method, run 3 steps; peak RSS in MiB, plus the imports-only floor. Runs
          before the time part: a child inherits the peak RSS of the parent it was forked from
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import format_row, interleaved, summarize, training_step  # noqa: E402

CANDIDATES = ("full fine-tuning", "peftlab LoRA", "HF PEFT LoRA")
LORA = dict(r=16, alpha=32, targets=("q_proj", "v_proj"))


def smollm2_batch(batch: int = 4, seq: int = 128) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 49000, (batch, seq), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def build(name: str, base: torch.nn.Module):
    """(model, trainable parameters) of candidate `name` on a copy of `base`."""
    model = copy.deepcopy(base)
    if name == "full fine-tuning":
        return model, list(model.parameters())
    if name == "peftlab LoRA":
        import peftlab

        ours = peftlab.apply(model, peftlab.LoraConfig(r=LORA["r"], alpha=LORA["alpha"], target_modules=LORA["targets"]))
        return ours, list(ours.trainable_parameters().values())
    import peft

    theirs = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                                        lora_dropout=0.0, target_modules=list(LORA["targets"])))
    return theirs, [p for p in theirs.parameters() if p.requires_grad]


def load_base() -> torch.nn.Module:
    from peftlab.models import load_model

    return load_model("smollm2", "causal-lm").model


def time_part(args) -> dict:
    base, batch = load_base(), smollm2_batch()
    candidates = {}
    for name in CANDIDATES:
        try:
            model, params = build(name, base)
        except ImportError:
            print(f"{name}: not installed, skipped (pip install peft)")
            continue
        candidates[name] = training_step(model, params, batch)
    times = interleaved(candidates, repeats=args.repeats, warmup=1)
    stats = {name: summarize(samples) for name, samples in times.items()}
    print(f"SmolLM2-135M training step, batch 4 x 128, {args.threads} threads, {args.repeats} interleaved repeats")
    for name, row in stats.items():
        print(format_row(name, row, stats["full fine-tuning"]) + " of full FT")
    if "HF PEFT LoRA" in stats:
        print(f"peftlab LoRA / HF PEFT LoRA = {stats['peftlab LoRA']['median'] / stats['HF PEFT LoRA']['median']:.3f}")
    return stats


def memory_case(name: str, threads: int) -> None:
    """Run in a fresh interpreter: print this process's peak RSS (MiB) after 3 steps of `name`."""
    torch.set_num_threads(threads)
    if name != "imports":
        import peftlab  # noqa: F401  (same imports as every other case)

        base = load_base()
        model, params = build(name, base)
        del base
        step = training_step(model, params, smollm2_batch())
        for _ in range(3):
            step()
    else:
        import peft  # noqa: F401

        import peftlab  # noqa: F401
        from peftlab.models import load_model  # noqa: F401
    print(json.dumps({"case": name, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory_part(args) -> dict:
    peaks = {}
    for name in ("imports", *CANDIDATES):
        out = subprocess.run([sys.executable, __file__, "--memory-case", name, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True).stdout
        peaks[name] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
        print(f"{name:<20} peak RSS {peaks[name]:8.1f} MiB", flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", default="time,memory")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.memory_case:
        memory_case(args.memory_case, args.threads)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    # Memory first: Linux carries a process's peak RSS across fork + exec, so the children must be
    # started while this parent is still small (before the time part loads three models).
    if "memory" in args.part:
        results["memory"] = memory_part(args)
    if "time" in args.part:
        results["time"] = time_part(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
