"""Shared pieces of the Trainer / SFTTrainer tests: tiny data sets, arguments and state checks."""

from __future__ import annotations

import datasets
import torch

from tiny_models import VOCAB

WORDS = ("name eatType food area near priceRange is a an the in of and with city centre riverside pub "
         "restaurant coffee shop Chinese Italian French cheap expensive Blue Spice Aromi Wrestlers")


def classification_rows(n: int = 16, seq: int = 7, seed: int = 0) -> datasets.Dataset:
    """Token ids, masks and labels for a tiny classifier (VOCAB ids, label = parity of the first id)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, seq), generator=generator)
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * n,
                                       "labels": (ids[:, 0] % 2).tolist()})


def causal_rows(n: int = 16, seq: int = 8, seed: int = 0) -> datasets.Dataset:
    """Token ids with labels equal to the ids (plain causal-LM training)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (n, seq), generator=generator).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * seq] * n, "labels": ids})


def sft_rows(n: int = 16) -> datasets.Dataset:
    """Prompt-completion pairs over `WORDS` (SFTTrainer trains the completion tokens only)."""
    facts = [("Aromi", "coffee shop", "Chinese", "city centre"), ("Blue Spice", "pub", "French", "riverside"),
             ("Wrestlers", "restaurant", "Italian", "riverside"), ("Aromi", "pub", "Italian", "city centre")]
    rows = []
    for i in range(n):
        name, kind, food, area = facts[i % len(facts)]
        rows.append({"prompt": f"name {name} eatType {kind} food {food} area {area}\n",
                     "completion": f"{name} is a {food} {kind} in the {area}"})
    return datasets.Dataset.from_list(rows)


def trainer_args(out, **changes):
    """TrainingArguments for a few CPU steps, quiet and without trackers."""
    from transformers import TrainingArguments

    fields = dict(output_dir=str(out), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                  save_steps=2, logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                  data_seed=0) | changes
    return TrainingArguments(**fields)


def snapshot(tensors) -> dict[str, torch.Tensor]:
    return {key: tensor.detach().clone() for key, tensor in tensors.items()}


def assert_only_adapters_changed(peft_model, base_before, adapters_before) -> None:
    """Frozen base tensors (`base_before`) bit-identical; some trainable tensor moved."""
    base = peft_model.base_parameters()
    for key, tensor in base_before.items():
        assert torch.equal(base[key], tensor), f"frozen {key} changed"
    moved = [key for key, tensor in peft_model.trainable_parameters().items()
             if not torch.equal(tensor, adapters_before[key])]
    assert moved, "no trainable tensor changed"
