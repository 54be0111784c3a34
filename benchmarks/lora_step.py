"""Training-step time of peftlab LoRA vs Hugging Face PEFT LoRA vs full fine-tuning on MiniLM.

    python benchmarks/lora_step.py [--repeats 20] [--threads 2] [--json out.json]

One step = forward + backward + AdamW step on a batch of 8 x 128 random tokens, for the real
all-MiniLM-L6-v2 (sequence classification, 2 labels); LoRA r=16, alpha=32 on query and value
for both libraries. The three candidates are timed round-robin in one process.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import format_row, interleaved, minilm_batch, summarize, training_step  # noqa: E402

import peftlab  # noqa: E402
from peftlab.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = load_model("minilm", "classification", num_labels=2).model
    batch = minilm_batch()

    full = copy.deepcopy(base)
    ours = peftlab.apply(copy.deepcopy(base), peftlab.LoraConfig(r=16, alpha=32, target_modules=("query", "value")))
    candidates = {
        "full fine-tuning": training_step(full, list(full.parameters()), batch),
        "peftlab LoRA": training_step(ours, list(ours.trainable_parameters().values()), batch),
    }
    try:
        import peft
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(
            task_type="SEQ_CLS", r=16, lora_alpha=32, target_modules=["query", "value"]))
        candidates["HF PEFT LoRA"] = training_step(theirs, [p for p in theirs.parameters() if p.requires_grad], batch)
    except ImportError:
        print("Hugging Face PEFT is not installed: its column is skipped (pip install peft)")

    times = interleaved(candidates, repeats=args.repeats)
    stats = {name: summarize(samples) for name, samples in times.items()}
    print(f"MiniLM training step, batch 8 x 128, {args.threads} threads, {args.repeats} interleaved repeats")
    for name, row in stats.items():
        print(format_row(name, row, stats["full fine-tuning"]) + " of full FT")
    if "HF PEFT LoRA" in stats:
        ratio = stats["peftlab LoRA"]["median"] / stats["HF PEFT LoRA"]["median"]
        print(f"peftlab LoRA / HF PEFT LoRA = {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
