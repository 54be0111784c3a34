"""SmolLM2-135M training step: full fine-tuning, LoRA and QLoRA, peftlab vs Hugging Face PEFT.

    python benchmarks/smollm2_step.py [--repeats 10] [--threads 2] [--part time,memory] [--json out.json]
        [--targets q_proj,v_proj | all] [--candidates full,lora,hf-lora[,qlora,hf-qlora]] [--data random|e2e]

One step = forward + backward + AdamW step on a batch of 4 x 128 random tokens (labels = inputs;
``--data e2e``: 8 E2E training rows collated as `peftlab train` does, prompts unlabelled)
through the real SmolLM2-135M-Instruct causal LM, float32 compute. LoRA: r=16, alpha=32, no
dropout, on `--targets` (``all``: q/k/v/o and gate/up/down of every block), for both libraries.
Candidates: ``full`` (full fine-tuning), ``lora`` / ``hf-lora`` (peftlab / HF PEFT LoRA on the
float32 model), ``qlora`` (peftlab QLoRA: NF4 block 64 + double quantization, loaded straight
into 4 bits with ``load_model_4bit``) and ``hf-qlora`` (HF PEFT LoRA on bitsandbytes' 4-bit
layers: ``BitsAndBytesConfig`` nf4, double quantization, float32 compute dtype, then
``prepare_model_for_kbit_training``). peftlab's candidates take the loss the way `peftlab train`
does (the head fused with the loss, `train/lm_loss.py`); ``lora-plain`` / ``qlora-plain`` are the
same models under ``model(**batch).loss`` (transformers' head and loss), so the adapter layers
alone compare with HF PEFT's.

  time    the candidates in ONE process, round-robin with a rotating order (common.interleaved);
          medians, IQRs and each ratio as the median of per-round ratios with a bootstrap interval, with the load
          average before and after
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
from common import format_row, interleaved, load_average, paired_ratio, summarize, training_step  # noqa: E402

CANDIDATES = {"full": "full fine-tuning", "lora": "peftlab LoRA", "lora-plain": "peftlab LoRA, HF loss",
              "hf-lora": "HF PEFT LoRA", "qlora": "peftlab QLoRA", "qlora-plain": "peftlab QLoRA, HF loss",
              "hf-qlora": "HF PEFT QLoRA"}
FLOAT_CANDIDATES = ("full", "lora", "lora-plain", "hf-lora")  # built from the float32 model
ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA = dict(r=16, alpha=32)
# (numerator, denominator) pairs whose ratio of medians the time part prints, when both ran.
RATIOS = (("lora", "hf-lora"), ("qlora", "hf-qlora"), ("qlora", "lora"), ("lora-plain", "hf-lora"),
          ("qlora-plain", "hf-qlora"), ("hf-qlora", "hf-lora"), ("lora", "full"), ("hf-lora", "full"))


def smollm2_batch(batch: int = 4, seq: int = 128, data: str = "random") -> dict[str, torch.Tensor]:
    """``random``: `batch` x `seq` random tokens, every one a label. ``e2e``: the first 8 rows of the
    embedded E2E training set as `peftlab train` collates them (max_length 64, padded to the longest
    row, labels -100 on the prompt and the padding)."""
    if data == "e2e":
        from peftlab.data import load_task
        from peftlab.models.loading import load_tokenizer
        from peftlab.train.evaluate import make_collator

        task = load_task("e2e")
        return make_collator(task, load_tokenizer("smollm2"), max_length=64)(list(task.train[:8]))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 49000, (batch, seq), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def step_loss(key: str, model: torch.nn.Module):
    """loss(model, batch) of candidate `key`: peftlab's ``lora`` / ``qlora`` take it as `peftlab
    train` does (one fused head per run, its workspace kept between steps), the rest from
    ``model(**batch).loss``."""
    if key not in ("lora", "qlora"):
        return lambda model, batch: model(**batch).loss
    from peftlab.train.lm_loss import FusedLmHead, head_arguments

    head = FusedLmHead.for_model(model.model)

    def loss_of(model, batch):
        with head_arguments(head) as extra:
            return model(**batch, **extra).loss
    return loss_of


def candidate_step(key: str, targets: tuple[str, ...], float_base: torch.nn.Module | None,
                   batch: dict[str, torch.Tensor]):
    """The timed step of candidate `key` on `batch` (a fresh model, its own AdamW)."""
    model, params = build(key, targets, float_base)
    return training_step(model, params, batch, step_loss(key, model))


def build(key: str, targets: tuple[str, ...], float_base: torch.nn.Module | None = None):
    """(model, trainable parameters) of candidate `key`; float candidates copy `float_base`."""
    key = key.removesuffix("-plain")
    if key == "full":
        model = copy.deepcopy(float_base)
        return model, list(model.parameters())
    if key in ("lora", "qlora"):
        import peftlab
        from peftlab.quant.loading import load_model_4bit

        model = copy.deepcopy(float_base) if key == "lora" else load_model_4bit("smollm2", "causal-lm").model
        ours = peftlab.apply(model, peftlab.make_config(key, r=LORA["r"], alpha=LORA["alpha"], target_modules=targets))
        return ours, list(ours.trainable_parameters().values())
    import peft

    if key == "hf-lora":
        model = copy.deepcopy(float_base)
    else:
        model = peft.prepare_model_for_kbit_training(load_bitsandbytes_4bit(), use_gradient_checkpointing=False)
    theirs = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                                        lora_dropout=0.0, target_modules=list(targets)))
    return theirs, [p for p in theirs.parameters() if p.requires_grad]


def load_bitsandbytes_4bit() -> torch.nn.Module:
    """SmolLM2 from the same local folder, its linears in bitsandbytes' NF4 (double quant, fp32 compute)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from peftlab.models.loading import resolve_model_folder

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(resolve_model_folder("smollm2"), quantization_config=quantization,
                                                device_map="cpu", dtype=torch.float32, local_files_only=True)


def load_base() -> torch.nn.Module:
    from peftlab.models import load_model

    return load_model("smollm2", "causal-lm").model


def time_part(args, keys: list[str], targets: tuple[str, ...]) -> dict:
    base = load_base() if any(key in FLOAT_CANDIDATES for key in keys) else None
    batch, candidates = smollm2_batch(data=args.data), {}
    for key in keys:
        try:
            candidates[key] = candidate_step(key, targets, base, batch)
        except ImportError as error:
            print(f"{CANDIDATES[key]}: not installed, skipped ({error})")
            continue
    before = load_average()
    times = interleaved(candidates, repeats=args.repeats, warmup=1)
    after = load_average()
    stats = {key: summarize(samples) for key, samples in times.items()}
    shape = "x".join(map(str, batch["input_ids"].shape))
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    print(f"SmolLM2-135M training step, {args.data} batch {shape} ({labelled} labelled tokens), targets {','.join(targets)}, {args.threads} threads, "
          f"{args.repeats} interleaved repeats, load average {before} before, {after} after")
    for key, row in stats.items():
        print(format_row(CANDIDATES[key], row))
    ratios = {f"{a}/{b}": paired_ratio(times[a], times[b]) for a, b in RATIOS if a in stats and b in stats}
    for pair, ratio in ratios.items():
        a, b = pair.split("/")
        print(f"{CANDIDATES[a]} / {CANDIDATES[b]} = {ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}] "
              f"(median of {ratio['rounds']} per-round ratios, 95 % bootstrap interval)")
    return {"stats_s": {CANDIDATES[key]: row for key, row in stats.items()}, "ratios": ratios,
            "load_before": before, "load_after": after}


def memory_case(key: str, threads: int, targets: tuple[str, ...], data: str) -> None:
    """Run in a fresh interpreter: print this process's peak RSS (MiB) after 3 steps of `key`."""
    torch.set_num_threads(threads)
    if key != "imports":
        import peftlab  # noqa: F401  (same imports as every other case)

        base = load_base() if key in FLOAT_CANDIDATES else None
        step = candidate_step(key, targets, base, smollm2_batch(data=data))
        del base
        for _ in range(3):
            step()
    else:
        import peft  # noqa: F401

        import peftlab  # noqa: F401
        from peftlab.models import load_model  # noqa: F401
    print(json.dumps({"case": key, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def memory_part(args, keys: list[str]) -> dict:
    peaks = {}
    for key in ("imports", *keys):
        out = subprocess.run([sys.executable, __file__, "--memory-case", key, "--threads", str(args.threads),
                              "--targets", args.targets, "--data", args.data],
                             capture_output=True, text=True, check=True).stdout
        peaks[key] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
        print(f"{CANDIDATES.get(key, key):<24} peak RSS {peaks[key]:8.1f} MiB", flush=True)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", default="time,memory")
    parser.add_argument("--targets", default="q_proj,v_proj", help="comma-separated module names, or 'all'")
    parser.add_argument("--candidates", default="full,lora,hf-lora", help=f"comma-separated: {', '.join(CANDIDATES)}")
    parser.add_argument("--data", default="random", choices=("random", "e2e"), help="the batch (see smollm2_batch)")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    targets = ALL_LINEARS if args.targets == "all" else tuple(args.targets.split(","))
    keys = args.candidates.split(",")
    unknown = [key for key in keys if key not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    if args.memory_case:
        memory_case(args.memory_case, args.threads, targets, args.data)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    # Memory first: Linux carries a process's peak RSS across fork + exec, so the children must be
    # started while this parent is still small (before the time part loads the models).
    if "memory" in args.part:
        results["memory"] = memory_part(args, keys)
    if "time" in args.part:
        results["time"] = time_part(args, keys, targets)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
