"""Training-step time of each peftlab method against the same method in Hugging Face PEFT.

    python benchmarks/vs_hf_peft.py [--repeats 15] [--threads 2] [--methods lora,ia3,prompt,prefix]
                                    [--json out.json]

One step = forward + backward + AdamW step on a batch of 8 x 128 random tokens through the real
all-MiniLM-L6-v2 (sequence classification, 2 labels). Same settings on both sides:

    lora     r=16, alpha=32 on query and value
    dora     the same, weight-decomposed (HF PEFT: use_dora=True)
    ia3      key, value and the FFN output dense (HF's BERT defaults)
    prompt   20 virtual tokens, random init
    prefix   20 virtual tokens with the MLP reparametrisation (skipped where HF PEFT fails)

Every candidate of every method is timed round-robin in ONE process (rotating order each
repeat), so machine noise lands on both sides of each ratio alike. Ratio = peftlab median /
HF PEFT median (below 1: peftlab is faster).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import format_row, interleaved, load_average, minilm_batch, paired_ratio, summarize, training_step  # noqa: E402

import peftlab  # noqa: E402
from peftlab.models import load_model  # noqa: E402

OURS = {
    "lora": dict(r=16, alpha=32.0, target_modules=("query", "value")),
    "dora": dict(r=16, alpha=32.0, target_modules=("query", "value")),
    "ia3": dict(),
    "prompt": dict(num_virtual_tokens=20),
    "prefix": dict(num_virtual_tokens=20, projection=True),
}


def theirs(method: str, model):
    import peft

    configs = {
        "lora": lambda: peft.LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, target_modules=["query", "value"]),
        "dora": lambda: peft.LoraConfig(task_type="SEQ_CLS", r=16, lora_alpha=32, target_modules=["query", "value"],
                                        use_dora=True),
        "ia3": lambda: peft.IA3Config(task_type="SEQ_CLS"),
        "prompt": lambda: peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=20),
        "prefix": lambda: peft.PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=20, prefix_projection=True,
                                                  encoder_hidden_size=model.config.hidden_size),
    }
    return peft.get_peft_model(model, configs[method]())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(OURS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = load_model("minilm", "classification", num_labels=2).model
    batch = minilm_batch()
    candidates, skipped = {}, {}
    for method in args.methods.split(","):
        ours = peftlab.apply(copy.deepcopy(base), peftlab.make_config(method, **OURS[method]))
        try:
            hf = theirs(method, copy.deepcopy(base))
            training_step(hf, [p for p in hf.parameters() if p.requires_grad], batch)()  # fails early if unsupported
        except Exception as error:  # noqa: BLE001 - HF PEFT's support differs per architecture
            skipped[method] = f"{type(error).__name__}: {error}"
            continue
        candidates[f"peftlab {method}"] = training_step(ours, list(ours.trainable_parameters().values()), batch)
        candidates[f"HF PEFT {method}"] = training_step(hf, [p for p in hf.parameters() if p.requires_grad], batch)

    times = interleaved(candidates, repeats=args.repeats)
    stats = {name: summarize(samples) for name, samples in times.items()}
    print(f"MiniLM training step, batch 8 x 128, {args.threads} threads, {args.repeats} interleaved repeats, "
          f"load average {load_average()}")
    ratios = {}
    for method in args.methods.split(","):
        if method in skipped:
            print(f"{method}: HF PEFT skipped ({skipped[method][:200]})")
            continue
        ours, hf = stats[f"peftlab {method}"], stats[f"HF PEFT {method}"]
        print(format_row(f"HF PEFT {method}", hf))
        ratios[method] = paired_ratio(times[f"peftlab {method}"], times[f"HF PEFT {method}"])
        print(format_row(f"peftlab {method}", ours, hf) + f" of HF PEFT; per-round {ratios[method]['median']:.3f} "
              f"[{ratios[method]['low']:.3f}, {ratios[method]['high']:.3f}]")
    if args.json:
        args.json.write_text(json.dumps({"stats": stats, "ratios": ratios, "skipped": skipped}, indent=2))


if __name__ == "__main__":
    main()
