"""SmolLM2-135M-Instruct on E2E NLG: zero-shot vs LoRA vs QLoRA after a short fine-tuning run.

    python benchmarks/smollm2_e2e.py [--steps 100] [--batch-size 8] [--max-length 64] [--lr 1e-3]
                                     [--dev-prompts 50] [--threads 2] [--cases zero-shot,lora,qlora]
                                     [--json out.json]

Cases (each loads the model afresh, seed 0):
  zero-shot   the base model, no training, greedy decoding under three prompt formats: the plain
              format the fine-tuned runs use ("<mr>\\n"), the same with a one-line instruction, and
              the instruction as the user turn of the model's chat template (its best chance)
  lora        r=16, alpha=32 on all block linears (q/k/v/o, gate/up/down), float32 base
  qlora       the same LoRA on the NF4 base (block 64, double quantization), loaded straight into
              4 bits with `load_model_4bit`

Training: the embedded E2E subset (3,000 training rows, seeded order), `--steps` AdamW steps of
`--batch-size` rows, loss on the target tokens only, 6% warmup then linear decay. Scoring: the
first `--dev-prompts` distinct meaning representations of the embedded dev set, greedy decoding
(max 48 new tokens), corpus BLEU (sacrebleu, all references of each MR) and ROUGE-L F (rouge-score,
best reference), plus the dev loss over every reference's target tokens. Prints a Markdown table
and sample generations; `--json` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import peftlab
from peftlab.data import load_task
from peftlab.data.collators import PromptFormat
from peftlab.data.generation import generate_texts
from peftlab.data.metrics import generation_scores
from peftlab.data.tasks import group_references
from peftlab.models import load_model
from peftlab.quant.loading import load_model_4bit
from peftlab.train import TrainConfig, evaluate, train

INSTRUCTION = "Write one sentence for a restaurant guide from these facts: {prompt}\n"
ZERO_SHOT_FORMATS = {
    "plain": PromptFormat(),
    "instruction": PromptFormat(template=INSTRUCTION),
    "chat + instruction": PromptFormat(template=INSTRUCTION, chat=True),
}
LORA = dict(r=16, alpha=32.0, target_modules="all-linear", dropout=0.05)
MAX_NEW_TOKENS = 48


def zero_shot(task, args) -> dict:
    loaded = load_model("smollm2", "causal-lm")
    groups = group_references(task.dev)
    rows = {}
    for label, prompt_format in ZERO_SHOT_FORMATS.items():
        started = time.perf_counter()
        outputs = generate_texts(loaded.model, loaded.tokenizer, [g.prompt for g in groups],
                                 max_new_tokens=MAX_NEW_TOKENS, prompt_format=prompt_format)
        scores = generation_scores(outputs, [g.references for g in groups])
        rows[label] = {**scores, "decode_s": time.perf_counter() - started,
                       "samples": [{"prompt": g.prompt, "output": o} for g, o in zip(groups[:3], outputs)]}
    rows["plain"].update(evaluate(loaded.model, task, loaded.tokenizer, batch_size=16,
                                  max_length=args.max_length))
    return rows


def fine_tuned(method: str, task, args) -> dict:
    torch.manual_seed(0)
    if method == "qlora":
        loaded = load_model_4bit("smollm2", "causal-lm")
        config = peftlab.make_config("qlora", **LORA)
    else:
        loaded = load_model("smollm2", "causal-lm")
        config = peftlab.make_config("lora", **LORA)
    peft_model = peftlab.apply(loaded.model, config)
    trainable, _ = peft_model.count_parameters()
    settings = TrainConfig(learning_rate=args.lr, max_steps=args.steps, batch_size=args.batch_size,
                           max_length=args.max_length, eval_batch_size=16, log_every=10,
                           generate=True, max_new_tokens=MAX_NEW_TOKENS, num_threads=args.threads)
    result = train(peft_model, task, loaded.tokenizer, settings, progress=args.progress)
    metrics = result.final_metrics
    return {"trainable": trainable, "bleu": metrics["bleu"], "rouge_l": metrics["rouge_l"],
            "loss": metrics["loss"], "perplexity": metrics["perplexity"], "samples": metrics["samples"][:3],
            "train_s": result.train_time_s, "step_median_s": result.step_time["median"],
            "eval_s": result.eval_time_s, "peak_rss_mb": result.peak_rss_mb,
            "losses": [round(h["loss"], 4) for h in result.history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dev-prompts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="zero-shot,lora,qlora")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = load_task("e2e", max_dev=args.dev_prompts)
    print(f"E2E: {len(task.train)} train rows, {len(group_references(task.dev))} dev prompts "
          f"({len(task.dev)} references); {args.steps} steps x {args.batch_size}, lr {args.lr}")
    results: dict = {"args": vars(args) | {"json": str(args.json)}, "lora": LORA}
    for case in args.cases.split(","):
        started = time.perf_counter()
        results[case] = zero_shot(task, args) if case == "zero-shot" else fine_tuned(case, task, args)
        print(f"{case} done in {time.perf_counter() - started:.0f} s", flush=True)

    print("\n| model | dev BLEU | dev ROUGE-L | dev loss | train s | median step s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, row in results.get("zero-shot", {}).items():
        loss = f"{row['loss']:.3f}" if "loss" in row else "–"
        print(f"| zero-shot, {label} prompt | {row['bleu']:.2f} | {row['rouge_l']:.4f} | {loss} | – | – |")
    for case in ("lora", "qlora"):
        if case in results:
            row = results[case]
            print(f"| {case} ({row['trainable']:,} trainable) | {row['bleu']:.2f} | {row['rouge_l']:.4f} | "
                  f"{row['loss']:.3f} | {row['train_s']:.0f} | {row['step_median_s']:.2f} |")
    for case, row in results.items():
        if case in ("lora", "qlora"):
            print(f"\n{case} samples:")
            for sample in row["samples"]:
                print(f"  {sample['prompt']}\n    -> {sample['output']}")
        elif case == "zero-shot":
            for label, zero in row.items():
                print(f"\nzero-shot ({label}) samples:")
                for sample in zero["samples"]:
                    print(f"  {sample['prompt']}\n    -> {sample['output']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
