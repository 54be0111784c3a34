"""A peftlab model under `transformers.Trainer` through `for_trainer`: every method and a
combination train with only their own tensors moving, checkpoints are Hugging Face PEFT folders
that HF PEFT and peftlab load with equal logits, gradient checkpointing changes nothing, and a
resumed run ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

import peftlab
from method_configs import config_for
from peftlab.integrations.transformers import TrainerModel, for_trainer, make_optimizer
from peftlab.quant.loading import dequantize_model, quantize_model
from tiny_models import tiny_batch, tiny_model
from trainer_helpers import (assert_only_adapters_changed, causal_rows, classification_rows, snapshot,
                             trainer_args)

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

METHODS = [*peftlab.method_names(), "lora+prompt"]


def _config(method: str, arch: str = "llama", task: str = "causal-lm"):
    if method == "lora+prompt":
        return peftlab.make_config("lora+prompt", lora={"r": 4, "target_modules": ("q_proj", "v_proj")},
                                   prompt={"num_virtual_tokens": 3})
    return config_for(method, arch, task)


def _model(method: str, arch: str = "llama", task: str = "causal-lm", seed: int = 0):
    torch.manual_seed(seed)
    return peftlab.apply(tiny_model(arch, task), _config(method, arch, task))


def _frozen(peft_model) -> dict[str, torch.Tensor]:
    trainable = {id(p) for p in peft_model.trainable_parameters().values()}
    return snapshot({k: p for k, p in peft_model.base_parameters().items() if id(p) not in trainable})


def _train(peft_model, out, rows, **changes) -> Trainer:
    trainer = Trainer(model=for_trainer(peft_model), args=trainer_args(out, **changes), train_dataset=rows)
    trainer.train()
    return trainer


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _hf_logits(model, batch, virtual_tokens: int = 0):
    """HF PEFT's causal-LM logits over [prompt; tokens], cut to the tokens (as peftlab returns them)."""
    return _logits(model, batch)[:, virtual_tokens:]


def _causal_batch():
    batch = tiny_batch()
    del batch["labels"]
    return batch


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_only_its_tensors_moving(method, tmp_path):
    peft_model = _model(method)
    frozen, adapters = _frozen(peft_model), snapshot(peft_model.trainable_parameters())
    trainer = _train(peft_model, tmp_path, causal_rows(), max_steps=2)
    assert_only_adapters_changed(peft_model, frozen, adapters)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # The checkpoint is an adapter folder peftlab reads back into the same outputs.
    reloaded = peftlab.load_adapter(tiny_model("llama", "causal-lm"), tmp_path / "checkpoint-2")
    torch.testing.assert_close(_logits(reloaded, _causal_batch()), _logits(peft_model, _causal_batch()),
                               rtol=0, atol=1e-5)


def test_label_names_and_columns_come_from_the_base_forward(tmp_path):
    trainer = Trainer(model=for_trainer(_model("lora", "bert", "classification")), args=trainer_args(tmp_path),
                      train_dataset=classification_rows())
    assert trainer.label_names == ["labels"]
    assert isinstance(trainer.model, TrainerModel)
    trainer._set_signature_columns_if_needed()
    assert {"input_ids", "attention_mask", "labels"} <= set(trainer._signature_columns)


@pytest.mark.parametrize("method,arch,task", [("lora", "bert", "classification"), ("prompt", "llama", "causal-lm")])
def test_trainer_checkpoint_loads_in_hf_peft_with_equal_logits(method, arch, task, tmp_path):
    peft_model = _model(method, arch, task)
    rows = classification_rows() if task == "classification" else causal_rows()
    _train(peft_model, tmp_path, rows, max_steps=2)
    folder = tmp_path / "checkpoint-2"
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    batch = tiny_batch() if task == "classification" else _causal_batch()
    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), folder)
    virtual = 3 if method == "prompt" else 0
    torch.testing.assert_close(_hf_logits(theirs, batch, virtual), _logits(peft_model, batch), rtol=0, atol=1e-5)


def test_qlora_checkpoint_loads_in_hf_peft_on_the_dequantized_base(tmp_path):
    peft_model = _model("qlora")
    _train(peft_model, tmp_path, causal_rows(), max_steps=2)
    base = tiny_model("llama", "causal-lm")
    quantize_model(base, block_size=32)  # the same NF4 codes as the trained base, then back to float
    dequantize_model(base)
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "checkpoint-2")
    torch.testing.assert_close(_logits(theirs, _causal_batch()), _logits(peft_model, _causal_batch()),
                               rtol=0, atol=1e-4)


def test_combination_checkpoint_parts_load_in_hf_peft(tmp_path):
    peft_model = _model("lora+prompt")
    _train(peft_model, tmp_path, causal_rows(), max_steps=2)
    folder = tmp_path / "checkpoint-2"
    theirs = peft.PeftModel.from_pretrained(tiny_model("llama", "causal-lm"), folder / "lora")
    peft_model.set_active(["default:lora"])
    torch.testing.assert_close(_logits(theirs, _causal_batch()), _logits(peft_model, _causal_batch()),
                               rtol=0, atol=1e-5)
    theirs = peft.PeftModel.from_pretrained(tiny_model("llama", "causal-lm"), folder / "prompt")
    peft_model.set_active(["default:prompt"])
    torch.testing.assert_close(_hf_logits(theirs, _causal_batch(), 3), _logits(peft_model, _causal_batch()),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "prompt"])
def test_gradient_checkpointing_trains_the_same_adapter(method, tmp_path):
    plain, checkpointed = _model(method), _model(method)
    _train(plain, tmp_path / "plain", causal_rows(), max_steps=2)
    trainer = _train(checkpointed, tmp_path / "ckpt", causal_rows(), max_steps=2, activation_checkpointing=True)
    assert trainer.model.is_activation_checkpointing
    for key, tensor in plain.trainable_parameters().items():
        torch.testing.assert_close(checkpointed.trainable_parameters()[key], tensor, rtol=1e-4, atol=1e-6)


def test_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    straight = _model("lora")
    _train(straight, tmp_path / "a", causal_rows(), max_steps=4)
    resumed = _model("lora", seed=1)  # a different start: the checkpoint must overwrite it
    trainer = Trainer(model=for_trainer(resumed), args=trainer_args(tmp_path / "b", max_steps=4),
                      train_dataset=causal_rows())
    trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    for key, tensor in straight.trainable_parameters().items():
        torch.testing.assert_close(resumed.trainable_parameters()[key], tensor, rtol=1e-5, atol=1e-7)


def test_save_model_writes_the_adapter_folder(tmp_path):
    peft_model = _model("lora", "bert", "classification")
    trainer = _train(peft_model, tmp_path / "run", classification_rows(), max_steps=1, save_strategy="no")
    trainer.save_model(str(tmp_path / "final"))
    assert peftlab.core.files.read_adapter_config(tmp_path / "final")["peft_type"] == "LORA"
    theirs = peft.PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "final")
    torch.testing.assert_close(_logits(theirs, tiny_batch()), _logits(peft_model, tiny_batch()), rtol=0, atol=1e-5)


def test_make_optimizer_keeps_a_combination_s_learning_rate_scales():
    config = peftlab.make_config("lora+prompt", lora={"r": 4, "target_modules": ("q_proj",)},
                                 prompt={"num_virtual_tokens": 3}, lr_scales={"prompt": 100})
    model = for_trainer(peftlab.apply(tiny_model("llama", "causal-lm"), config))
    optimizer = make_optimizer(model, trainer_args("unused", learning_rate=1e-3, weight_decay=0.0))
    rates = sorted({group["lr"] for group in optimizer.param_groups})
    assert rates == pytest.approx([1e-3, 0.1])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(model.peft_model.trainable_parameters())


def test_for_trainer_refuses_what_it_cannot_train():
    with pytest.raises(peftlab.errors.ConfigError, match="PeftModel"):
        for_trainer(tiny_model("bert"))
