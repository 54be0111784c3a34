"""LoRA+: the optimizer's parameter groups are Hugging Face PEFT's `create_loraplus_optimizer`'s,
and the ratios survive the adapter file."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.methods.loraplus import LoraPlusConfig
from peftlab.train import TrainConfig
from peftlab.train.schedule import make_optimizer
from tiny_models import tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")
from peft.optimizers import create_loraplus_optimizer  # noqa: E402

LR = 1e-3
CASES = [("bert", "classification", ["query", "value"]),
         ("gpt2", "causal-lm", ["c_attn", "c_fc", "wte"]),
         ("llama", "classification", ["q_proj", "v_proj", "down_proj", "embed_tokens"])]


def _hf_name(name: str) -> str:
    """An HF PEFT parameter name as a peftlab trainable key (no wrapper prefixes, no adapter name)."""
    name = name.removeprefix("base_model.model.").replace(".default", "")
    return name.replace(".modules_to_save", "").replace(".original_module", "")


def _groups(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("arch,task,targets", CASES)
def test_parameter_groups_are_hf_peft_create_loraplus_optimizer_groups(arch, task, targets):
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    ours = peftlab.apply(tiny_model(arch, task), LoraPlusConfig(r=4, target_modules=tuple(targets)))
    params = ours.trainable_parameters()
    optimizer = make_optimizer(params, TrainConfig(learning_rate=LR, weight_decay=0.0), ours.learning_rate_scales())
    mine = {key: _groups(optimizer)[id(p)] for key, p in params.items()}

    theirs = peft.get_peft_model(tiny_model(arch, task), peft.LoraConfig(task_type=task_type, r=4,
                                                                            target_modules=targets))
    hf = create_loraplus_optimizer(theirs, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=16.0,
                                   loraplus_lr_embedding=LR * 1e-3)
    by_id = _groups(hf)
    expected = {_hf_name(name): by_id[id(p)] for name, p in theirs.named_parameters() if p.requires_grad}
    assert mine.keys() == expected.keys()
    assert {k: pytest.approx(v) for k, v in mine.items()} == expected
    assert {lr for lr, _ in mine.values()} >= {LR, 16 * LR}


def test_a_combination_part_multiplies_its_scale_with_loraplus():
    model = peftlab.apply(tiny_model("bert"), peftlab.make_config(
        "loraplus+prompt", loraplus={"r": 4, "lr_ratio": 4.0}, prompt={"num_virtual_tokens": 2}, lr_scales={"prompt": 30}))
    scales = model.learning_rate_scales()
    assert {scale for key, scale in scales.items() if key.endswith("lora_B.weight")} == {4.0}
    assert {scale for key, scale in scales.items() if key.endswith("lora_A.weight")} == {1.0}
    assert scales["prompt_embeddings"] == 30.0


def test_the_ratios_survive_the_file(tmp_path):
    model = peftlab.apply(tiny_model("bert"), LoraPlusConfig(r=4, lr_ratio=8.0, embedding_lr_ratio=0.5))
    peftlab.save_adapter(model, tmp_path)
    loaded = peftlab.load_adapter(tiny_model("bert"), tmp_path)
    config = loaded.configs["default"]
    assert (config.method, config.lr_ratio, config.embedding_lr_ratio) == ("loraplus", 8.0, 0.5)
    assert loaded.learning_rate_scales() == model.learning_rate_scales()
