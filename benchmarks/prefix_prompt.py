"""Prompt and prefix tuning: training-step time and inference latency vs Hugging Face PEFT.

    python benchmarks/prefix_prompt.py [--part minilm|smollm2|sst2] [--repeats 10] [--threads 1]
                                       [--clock cpu|wall] [--method both|prompt|prefix] [--json out.json]

Part 1, the real all-MiniLM-L6-v2 (sequence classification, 2 labels), batch 8 x 128 random
tokens, 20 virtual tokens: inference latency (eval, no grad) of the base model, peftlab prompt
tuning, Hugging Face PEFT prompt tuning and peftlab prefix tuning (Hugging Face PEFT refuses
prefix tuning on this model); training step (forward + backward + AdamW) of the same adapters and
of full fine-tuning. The base model on 148 real tokens shows what the longer sequence alone costs.
Goals: prompt-tuning inference overhead <= 20/128 + 3% = 18.6% over the base,
step time <= 1.0x Hugging Face PEFT's.

Part 2, prefix tuning (20 tokens, plain prefixes, i.e. the folded form) against Hugging Face PEFT
on a SmolLM2-135M-shaped LLaMA causal LM with random weights (30 layers, 9 query / 3 KV heads,
vocabulary cut to 8192 so the output layer does not dominate), batch 2 x 128 (the shared CPU
allowed no more): inference latency and training step.

Every part times its candidates round-robin in one process, after two warm-up rounds, and
reports medians, interquartile ranges and ratios of medians. `--clock cpu` (the default) times
process CPU time, which on a shared, overloaded machine is far steadier than wall time; use it
with `--threads 1`.

Part 3 (`--part sst2`), dev accuracy on the embedded SST-2 (4000 train / 872 dev) with MiniLM:
125 steps of 32 through `peftlab.train` (one epoch), 20 virtual tokens, the classification head
trained alongside (it starts random) at the same learning rate: prompt tuning at the literature's
0.3, prefix tuning with the reparameterisation MLP at 5e-3.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import sys

sys.path.insert(0, str(Path(__file__).parent))
from common import inference_pass, minilm_batch, summarize, training_step  # noqa: E402

import peftlab  # noqa: E402
from peftlab.methods.prefix import PrefixTuningConfig
from peftlab.methods.prompt import PromptTuningConfig
from peftlab.models import load_model

N = 20
CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}


def interleaved(candidates, repeats, clock, warmup=2):
    """Seconds per call of each candidate, timed round-robin with a rotating start."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start = clock()
            candidates[name]()
            times[name].append(clock() - start)
    return times


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def report(title, times, reference):
    stats = {name: summarize(samples) for name, samples in times.items()}
    print(f"\n{title}")
    for name, row in stats.items():
        row["ratio"] = row["median"] / stats[reference]["median"]
        print(f"{name:<24} median {row['median'] * 1e3:8.1f} ms  IQR [{row['q1'] * 1e3:8.1f}, "
              f"{row['q3'] * 1e3:8.1f}]  {row['ratio']:.2f}x")
    return stats


def minilm(args, peft):
    base = load_model("minilm", "classification", num_labels=2).model
    batch = minilm_batch()
    prompt = peftlab.apply(copy.deepcopy(base), PromptTuningConfig(num_virtual_tokens=N))
    prefix = peftlab.apply(copy.deepcopy(base), PrefixTuningConfig(num_virtual_tokens=N))
    hf_prompt = peft.get_peft_model(copy.deepcopy(base),
                                    peft.PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=N))
    # The base model on a real input as long as prompt + tokens: what the extra length alone costs.
    longer = {"input_ids": torch.randint(1000, 30000, (8, 128 + N)),
              "attention_mask": torch.ones(8, 128 + N, dtype=torch.long)}
    inference = interleaved({
        "base model": inference_pass(base, batch),
        f"base model, {128 + N} tokens": inference_pass(base, longer),
        "peftlab prompt": inference_pass(prompt, batch),
        "HF PEFT prompt": inference_pass(hf_prompt, batch),
        "peftlab prefix": inference_pass(prefix, batch),
    }, args.repeats, CLOCK[args.clock])
    full = copy.deepcopy(base)
    steps = interleaved({
        "full fine-tuning": training_step(full, list(full.parameters()), batch),
        "peftlab prompt": training_step(prompt, trainable(prompt), batch),
        "HF PEFT prompt": training_step(hf_prompt, trainable(hf_prompt), batch),
        "peftlab prefix": training_step(prefix, trainable(prefix), batch),
    }, args.repeats, CLOCK[args.clock])
    return {"inference": report("MiniLM 8x128 inference latency (ratio to base)", inference, "base model"),
            "step": report("MiniLM 8x128 training step (ratio to HF PEFT prompt)", steps, "HF PEFT prompt")}


def smollm2_shaped(args, peft):
    config = LlamaConfig(vocab_size=8192, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=2048,
                         pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, 8192, (2, 128))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    ours = peftlab.apply(copy.deepcopy(base), PrefixTuningConfig(num_virtual_tokens=N))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.PrefixTuningConfig(task_type="CAUSAL_LM",
                                                                             num_virtual_tokens=N))
    inference = interleaved({"base model": inference_pass(base, batch), "peftlab prefix": inference_pass(ours, batch),
                             "HF PEFT prefix": inference_pass(theirs, batch)}, args.repeats, CLOCK[args.clock])
    steps = interleaved({"peftlab prefix": training_step(ours, trainable(ours), batch),
                         "HF PEFT prefix": training_step(theirs, trainable(theirs), batch)}, args.repeats, CLOCK[args.clock])
    return {"inference": report("SmolLM2-shaped 2x128 inference latency (ratio to base)", inference, "base model"),
            "step": report("SmolLM2-shaped 2x128 training step (ratio to HF PEFT prefix)", steps, "HF PEFT prefix")}


def sst2_accuracy(args):
    from peftlab.data import load_task
    from peftlab.train import TrainConfig, train

    loaded = load_model("minilm", "classification", num_labels=2)
    task = load_task("sst2")
    runs = {"prompt, lr 0.3": (PromptTuningConfig(num_virtual_tokens=N), 0.3),
            "prefix + MLP, lr 5e-3": (PrefixTuningConfig(num_virtual_tokens=N, projection=True), 5e-3)}
    results = {}
    for name, (config, lr) in runs.items():
        if args.method not in ("both", config.method):
            continue
        torch.manual_seed(0)
        model = peftlab.apply(copy.deepcopy(loaded.model), config)
        settings = TrainConfig(learning_rate=lr, max_steps=125, batch_size=32, weight_decay=0.0, seed=0)
        result = train(model, task, loaded.tokenizer, settings, progress=False)
        results[name] = {"dev": result.final_metrics, "train_s": result.wall_time_s,
                         "trainable": model.count_parameters()[0]}
        print(f"SST-2 dev {name}: {result.final_metrics} ({results[name]['trainable']:,} trainable, "
              f"{result.wall_time_s:.0f} s)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=tuple(CLOCK), default="cpu")
    parser.add_argument("--part", choices=("all", "minilm", "smollm2", "sst2"), default="all")
    parser.add_argument("--method", choices=("both", "prompt", "prefix"), default="both", help="for --part sst2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import peft  # the comparison needs the oracle library

    results = {"run_info": {"repeats": args.repeats, "threads": args.threads, "clock": args.clock,
                            "torch": torch.__version__, "peft": peft.__version__}}
    if args.part in ("all", "minilm"):
        results["minilm"] = minilm(args, peft)
    if args.part in ("all", "smollm2"):
        results["smollm2_shaped"] = smollm2_shaped(args, peft)
    if args.part == "sst2":
        results["sst2"] = sst2_accuracy(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
