"""QLoRA on a GPU in one run: peftlab's NF4 vs bitsandbytes, the 4-bit linear and the training step.

    python benchmarks/qlora_cuda.py [--device cuda] [--model smollm2] [--repeats 30] [--batch-size 4]
        [--seq 128] [--size 4096] [--parts linear,step] [--json qlora_cuda.json]

``linear``: one (size, size) weight with bias, nf4 block 64 + double quantization, bfloat16
compute: peftlab ``Linear4bit`` vs ``bitsandbytes.nn.Linear4bit`` vs a bfloat16 ``nn.Linear``;
256-token forward, 256-token forward + backward to the input, 1-token forward.

``step``: the causal LM `--model` (a name ``peftlab`` knows or a local folder), batch
`--batch-size` x `--seq` random tokens, LoRA r=16, alpha=32 on every block linear, AdamW:
``qlora`` (peftlab: linears loaded straight into NF4, bfloat16 compute), ``hf-qlora`` (HF PEFT
on ``BitsAndBytesConfig`` nf4 + double quantization, bfloat16 compute, after
``prepare_model_for_kbit_training``) and ``lora`` (peftlab LoRA on the float32 model, the anchor).
Non-quantized weights and the adapters stay float32 everywhere. peftlab's candidates take the loss
as `peftlab train` does (the head fused with the loss, `train/lm_loss.py`).

Timing: the candidates round-robin with a rotating order, each call bracketed by
``torch.cuda.synchronize``; medians, IQRs and per-round ratios with a bootstrap interval. Memory: the bytes each
candidate's model holds (allocated after building it minus before), and the peak a step adds on
top (``max_memory_allocated`` over its timed steps minus what was allocated before them).
Everything but the synchronization is device-agnostic; ``--device cpu`` runs the same code on a
CPU (the unit tests do, on a tiny model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import paired_ratio, summarize  # noqa: E402

ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def interleaved_on(device: torch.device, candidates: dict[str, Callable[[], None]], repeats: int,
                   warmup: int = 2) -> tuple[dict[str, list[float]], dict[str, int]]:
    """(seconds per call, peak bytes a call adds) per candidate, round-robin with a rotating start."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    peaks = dict.fromkeys(names, 0)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            synchronize(device)
            before = allocated(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            candidates[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) - before)
    return times, peaks


def linear_layers(size: int, device: torch.device) -> dict[str, torch.nn.Module]:
    """peftlab, bitsandbytes and bfloat16 dense versions of one (size, size) linear layer."""
    import bitsandbytes as bnb  # benchmark oracle only

    from peftlab.quant import Linear4bit

    torch.manual_seed(0)
    dense = torch.nn.Linear(size, size).requires_grad_(False)
    ours = Linear4bit.from_linear(dense, compute_dtype=torch.bfloat16).to(device)
    theirs = bnb.nn.Linear4bit(size, size, compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=True)
    theirs.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                      compress_statistics=True, blocksize=64)
    theirs.bias = torch.nn.Parameter(dense.bias.data.clone(), requires_grad=False)
    return {"peftlab": ours, "bitsandbytes": theirs.to(device), "bfloat16": dense.to(device, torch.bfloat16)}


def linear_part(args, device: torch.device) -> dict:
    layers = linear_layers(args.size, device)
    results = {}
    for case, tokens, backward in (("256 fwd", 256, False), ("256 fwd+bwd", 256, True), ("1 fwd", 1, False)):
        candidates = {}
        for name, layer in layers.items():
            dtype = torch.bfloat16 if name == "bfloat16" else torch.float32
            x = torch.randn(tokens, args.size, device=device, dtype=dtype, requires_grad=backward)
            candidates[name] = _layer_call(layer, x, backward)
        times, _ = interleaved_on(device, candidates, args.repeats)
        stats = {name: summarize([t * 1e3 for t in samples]) for name, samples in times.items()}
        results[case] = stats
        for name, row in stats.items():
            print(f"| {case} | {name} | {row['median']:.3f} | {row['q1']:.3f}–{row['q3']:.3f} | "
                  f"{row['median'] / stats['bitsandbytes']['median']:.2f}x |", flush=True)
    return results


def _layer_call(layer: torch.nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    def call() -> None:
        if backward:
            x.grad = None
            layer(x).float().sum().backward()
        else:
            with torch.no_grad():
                layer(x)
    return call


def build_step_candidate(key: str, folder: Path, device: torch.device, targets=ALL_LINEARS):
    """(model, trainable parameters) of `key` ("qlora" | "hf-qlora" | "lora") on `device`."""
    import peft
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    import peftlab
    from peftlab.quant.loading import load_quantized

    if key == "qlora":
        model, _ = load_quantized(folder, AutoModelForCausalLM, AutoConfig.from_pretrained(folder),
                                  compute_dtype=torch.bfloat16)
        ours = peftlab.apply(model.to(device), peftlab.make_config("qlora", r=16, alpha=32, target_modules=targets,
                                                                   compute_dtype="bfloat16"))
        return ours, list(ours.trainable_parameters().values())
    if key == "lora":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
        ours = peftlab.apply(model, peftlab.LoraConfig(r=16, alpha=32, target_modules=targets))
        return ours, list(ours.trainable_parameters().values())
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization, dtype=torch.float32,
                                                 device_map=str(device))
    model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    theirs = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                                        target_modules=list(targets)))
    return theirs, [p for p in theirs.parameters() if p.requires_grad]


def step_part(args, device: torch.device, folder: Path, keys=("qlora", "hf-qlora", "lora")) -> dict:
    generator = torch.Generator().manual_seed(0)
    candidates, resident = {}, {}
    vocabulary = None
    for key in keys:
        synchronize(device)
        before = allocated(device)
        model, params = build_step_candidate(key, folder, device)
        synchronize(device)
        resident[key] = allocated(device) - before
        vocabulary = model.config.vocab_size
        candidates[key] = _training_step(model, params, fused_head=key != "hf-qlora")
    ids = torch.randint(0, vocabulary, (args.batch_size, args.seq), generator=generator).to(device)
    batch = {"input_ids": ids, "labels": ids}
    times, peaks = interleaved_on(device, {key: (lambda step=step: step(batch)) for key, step in candidates.items()},
                                  args.repeats)
    stats = {key: summarize(samples) for key, samples in times.items()}
    for key, row in stats.items():
        print(f"| {key} | {row['median'] * 1e3:.1f} | {row['q1'] * 1e3:.1f}–{row['q3'] * 1e3:.1f} | "
              f"{resident[key] / 2**20:.1f} | {peaks[key] / 2**20:.1f} |", flush=True)
    ratios = {f"{a}/{b}": paired_ratio(times[a], times[b])
              for a, b in (("qlora", "hf-qlora"), ("qlora", "lora"), ("hf-qlora", "lora")) if a in stats and b in stats}
    for pair, ratio in ratios.items():
        print(f"{pair} = {ratio['median']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}] (per-round ratios)")
    return {"stats_s": stats, "ratios": ratios, "model_mib": {k: v / 2**20 for k, v in resident.items()},
            "step_peak_mib": {k: v / 2**20 for k, v in peaks.items()}}


def _training_step(model: torch.nn.Module, params: list[torch.nn.Parameter], fused_head: bool):
    from peftlab.train.lm_loss import FusedLmHead, head_arguments

    optimizer = torch.optim.AdamW(params, lr=1e-4)
    head = FusedLmHead.for_model(model.model) if fused_head else None

    def step(batch: dict[str, torch.Tensor]) -> None:
        model.train()
        with head_arguments(head) as extra:
            loss = model(**batch, **extra).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--parts", default="linear,step")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: this benchmark needs a GPU (or --device cpu to try it on the CPU)")
    import bitsandbytes
    import peft

    from peftlab.models.loading import resolve_model_folder

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {name}, torch {torch.__version__}, bitsandbytes {bitsandbytes.__version__}, peft {peft.__version__}, "
          f"{args.repeats} interleaved repeats")
    results: dict = {"device": name, "args": {k: str(v) for k, v in vars(args).items()}}
    if "linear" in args.parts:
        print(f"\n{args.size}x{args.size} linear, bfloat16 compute\n| case | impl | median ms | IQR ms | vs bitsandbytes |")
        print("| --- | --- | ---: | ---: | ---: |")
        results["linear"] = linear_part(args, device)
    if "step" in args.parts:
        folder = Path(resolve_model_folder(args.model))
        print(f"\n{args.model} training step, batch {args.batch_size} x {args.seq}, r=16 on every block linear")
        print("| candidate | median ms | IQR ms | model MiB | step peak MiB |\n| --- | ---: | ---: | ---: | ---: |")
        results["step"] = step_part(args, device, folder)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
