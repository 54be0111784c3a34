"""SmolLM2-135M-Instruct learns E2E NLG (restaurant facts -> one sentence) with TRL's SFTTrainer,
the adapter being a peftlab LoRA. The one peftlab-specific line is `for_trainer(model)`.

    python examples/sft_smollm2_e2e.py --out runs/sft-e2e          # ~20 min on 2 CPU cores
    peftlab eval runs/sft-e2e/adapter --model smollm2 --data e2e --max-dev 50 --generate

The same budget through peftlab's own loop, for comparison (BENCHMARKS.md has both side by side):

    peftlab train --method lora --model smollm2 --data e2e --r 16 --alpha 32 --targets all-linear \\
        --dropout 0.05 --lr 1e-3 --steps 100 --batch-size 8 --max-length 64 --max-dev 50 --generate \\
        --out runs/peftlab-e2e

Both train LoRA r=16, alpha=32, dropout 0.05 on every block linear for 100 AdamW steps of 8 rows
of the embedded E2E subset, learning rate 1e-3 with 6% warmup then linear decay, weight decay
0.01 on matrices, gradient clipping at 1.0, loss on the target tokens only, prompts as "<mr>\\n".
Both are scored by `peftlab.train.evaluate` on the first 50 dev meaning representations: dev
loss over every reference, then greedy decoding (64 new tokens at most) for corpus BLEU and
ROUGE-L. What differs is the trainer: data order (each its own seeded shuffle), prompt
truncation side (peftlab cuts the prompt's start, TRL the row's end; E2E rows rarely reach 64
tokens), and TRL's fused LM head computing the loss without the full logits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import torch
from trl import SFTConfig, SFTTrainer

import peftlab
from peftlab.data import load_task
from peftlab.data.collators import PromptFormat
from peftlab.integrations.transformers import for_trainer
from peftlab.models import load_model
from peftlab.train import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--dev-prompts", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="SFTConfig turns it on by default; off here, as in `peftlab train`")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    task = load_task("e2e", max_dev=args.dev_prompts)
    loaded = load_model("smollm2", "causal-lm")
    torch.manual_seed(args.seed)
    model = peftlab.apply(loaded.model, peftlab.LoraConfig(r=16, alpha=32, dropout=0.05, target_modules="all-linear"))
    prompt_format = PromptFormat()  # "<mr>\n", what peftlab's collator and generation use
    rows = datasets.Dataset.from_list([{"prompt": prompt_format.render(loaded.tokenizer, ex.prompt),
                                        "completion": ex.target} for ex in task.train])

    config = SFTConfig(
        output_dir=str(args.out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0.06, weight_decay=0.01, max_grad_norm=1.0,
        max_length=args.max_length, logging_steps=10, save_steps=args.steps, report_to=[], bf16=False,
        seed=args.seed, disable_tqdm=True, activation_checkpointing=args.gradient_checkpointing)
    trainer = SFTTrainer(model=for_trainer(model), args=config, train_dataset=rows, processing_class=loaded.tokenizer)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    trainer.save_model(str(args.out / "adapter"))  # a Hugging Face PEFT folder (peftlab eval, HF PEFT)

    metrics = evaluate(model, task, loaded.tokenizer, batch_size=64, max_length=args.max_length, generate=True)
    losses = [round(entry["loss"], 3) for entry in trainer.state.log_history if "loss" in entry]
    record = {"dev": metrics, "train_losses": losses, "train_wall_s": train_s, "steps": args.steps,
              "trainable_params": model.count_parameters()[0]}
    (args.out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"dev BLEU {metrics['bleu']:.2f}, ROUGE-L {metrics['rouge_l']:.2f}, loss {metrics['loss']:.3f}; "
          f"train {train_s:.0f} s; losses every 10 steps {losses}")


if __name__ == "__main__":
    main()
