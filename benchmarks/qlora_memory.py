"""Peak memory of QLoRA vs float LoRA on SmolLM2-135M, each case in a fresh process.

    python benchmarks/qlora_memory.py [--steps 3] [--batch-size 4] [--max-length 128] [--threads 2]
                                      [--gradient-checkpointing] [--cases imports,load-4bit,...]

Cases (peak RSS = the process's ru_maxrss, so each runs in its own interpreter):
  imports      python + torch + transformers + peftlab imported (the floor under every case)
  load-float   peftlab.models.load_model("smollm2", "causal-lm"), float32; then one short forward
  load-4bit    peftlab.quant.loading.load_model_4bit(...): the block linears read one at a time
               from the cached safetensors conversion, quantized, kept as NF4 (block 64, double
               quant); then one short forward
  train-lora   load float, LoRA r=16 alpha=32 on q_proj,v_proj, `--steps` optimizer steps on e2e
  train-qlora  load 4-bit, QLoRA with the same LoRA settings and steps; then export_merged with
               re-quantization, which reports the error re-quantizing the merged weights adds

Prints one JSON document (peak RSS per case in MiB, ratios, losses, bytes/param, re-quantization error).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

CASES = ("imports", "load-float", "load-4bit", "train-lora", "train-qlora")
LORA = dict(r=16, alpha=32.0, target_modules=("q_proj", "v_proj"))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _load(quantized: bool):
    from peftlab.models import load_model
    from peftlab.quant.loading import load_model_4bit

    return load_model_4bit("smollm2", "causal-lm") if quantized else load_model("smollm2", "causal-lm")


def _quantized_storage(model) -> dict:
    from peftlab.quant import Linear4bit

    layers = [m for m in model.modules() if isinstance(m, Linear4bit)]
    stored = sum(b.numel() * b.element_size() for m in layers for b in m.buffers())
    params = sum(m.in_features * m.out_features for m in layers)
    return {"layers": len(layers), "params": params, "bytes": stored, "bytes_per_param": stored / params}


def _train(quantized: bool, args) -> dict:
    import torch

    import peftlab
    from peftlab.data import load_task
    from peftlab.methods.qlora import QLoraConfig
    from peftlab.methods.qlora.layer import export_merged
    from peftlab.train import TrainConfig, train

    torch.manual_seed(0)
    task = load_task("e2e", max_train=args.steps * args.batch_size, max_dev=args.batch_size)
    loaded = _load(quantized)
    config = QLoraConfig(**LORA) if quantized else peftlab.LoraConfig(**LORA)
    peft_model = peftlab.apply(loaded.model, config)
    result = train(peft_model, task, loaded.tokenizer,
                   TrainConfig(max_steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                               eval_batch_size=args.batch_size,  # else a 64-row eval batch's logits set the peak
                               num_threads=args.threads, log_every=1, warmup_ratio=0.0, learning_rate=2e-4,
                               gradient_checkpointing=args.gradient_checkpointing),
                   progress=False)
    record = {"peak_rss_mib": _peak_mib(), "losses": [round(r["loss"], 4) for r in result.history],
              "dev": result.final_metrics, "trainable": peft_model.count_parameters()[0]}
    if quantized:
        batch = loaded.tokenizer(["name[The Eagle], food[French], area[riverside]"], return_tensors="pt")
        record["storage"] = _quantized_storage(peft_model.model)
        _, error = export_merged(peft_model, requantize=True, example_batch=dict(batch))
        record["requantization"] = error.as_dict()
    return record


def child(case: str, args) -> dict:
    import peftlab  # noqa: F401
    import peftlab.quant.loading  # noqa: F401
    import transformers  # noqa: F401

    if case == "imports":
        return {"peak_rss_mib": _peak_mib()}
    if case.startswith("load"):
        import torch

        loaded = _load(case == "load-4bit")
        record = {"peak_rss_mib": _peak_mib()}
        if case == "load-4bit":
            record["storage"] = _quantized_storage(loaded.model)
        # transformers maps a float safetensors file and pages weights in on first use: one short
        # forward pass touches every weight, so this is the memory the loaded model really needs.
        with torch.no_grad():
            loaded.model(**loaded.tokenizer(["name[The Eagle], food[French]"], return_tensors="pt"))
        record["peak_rss_after_forward_mib"] = _peak_mib()
        return record
    return _train(case == "train-qlora", args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gradient-checkpointing", action="store_true", help="in the train cases")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    results = {}
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--child", case, "--steps", str(args.steps), "--batch-size",
                   str(args.batch_size), "--max-length", str(args.max_length), "--threads", str(args.threads)]
        command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[case] = json.loads(output.strip().splitlines()[-1])
        print(f"{case:12s} peak RSS {results[case]['peak_rss_mib']:8.1f} MiB", file=sys.stderr, flush=True)
    peak = {case: r["peak_rss_mib"] for case, r in results.items()}
    ratios = {}
    if "load-float" in results and "load-4bit" in results:
        ratios["load-4bit/load-float after forward"] = (results["load-4bit"]["peak_rss_after_forward_mib"]
                                                        / results["load-float"]["peak_rss_after_forward_mib"])
    for a, b in (("train-qlora", "train-lora"), ("load-4bit", "load-float")):
        if a in peak and b in peak:
            ratios[f"{a}/{b}"] = peak[a] / peak[b]
            if "imports" in peak:
                ratios[f"{a}/{b} above imports"] = (peak[a] - peak["imports"]) / (peak[b] - peak["imports"])
    print(json.dumps({"settings": vars(args), "results": results, "ratios": ratios}, indent=1))


if __name__ == "__main__":
    main()
