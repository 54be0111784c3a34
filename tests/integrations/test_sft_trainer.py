"""A peftlab model under TRL's `SFTTrainer` through `for_trainer`: LoRA, prompt tuning, QLoRA and
LoRA + prompt train on prompt-completion pairs with gradient checkpointing, only their own tensors
move, the checkpoint reloads with equal logits, and TRL's fused LM head (installed on the model
inside, behind peftlab's hooks) gives the same loss as the model's own forward."""

from __future__ import annotations

import pytest
import torch

import peftlab
from data.helpers_tokenizer import word_tokenizer
from peftlab.integrations.transformers import for_trainer
from tiny_models import tiny_batch, tiny_model
from trainer_helpers import WORDS, assert_only_adapters_changed, sft_rows, snapshot

trl = pytest.importorskip("trl", reason="TRL is not installed: pip install 'peftlab[trl]'")

CONFIGS = {
    "lora": lambda: peftlab.LoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj", "down_proj")),
    "prompt": lambda: peftlab.PromptTuningConfig(num_virtual_tokens=3, init="vocab"),
    "qlora": lambda: peftlab.QLoraConfig(r=4, alpha=8, target_modules=("q_proj", "v_proj"), block_size=32),
    "lora+prompt": lambda: peftlab.make_config("lora+prompt", lora={"r": 4, "target_modules": ("q_proj", "v_proj")},
                                               prompt={"num_virtual_tokens": 3}),
}


def _sft(peft_model, out, **changes):
    tokenizer = word_tokenizer(WORDS)
    tokenizer.pad_token = tokenizer.eos_token
    fields = dict(max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, save_steps=2, logging_steps=1,
                  report_to=[], use_cpu=True, bf16=False, disable_tqdm=True, seed=0, max_length=32,
                  activation_checkpointing=True, dataset_num_proc=None) | changes
    return trl.SFTTrainer(model=for_trainer(peft_model), args=trl.SFTConfig(str(out), **fields),
                          train_dataset=sft_rows(), processing_class=tokenizer)


def _logits(model):
    batch = tiny_batch()
    del batch["labels"]
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("method", list(CONFIGS))
def test_sft_trainer_trains_only_the_adapters_and_checkpoints_reload(method, tmp_path):
    torch.manual_seed(0)
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"), CONFIGS[method]())
    trainable = {id(p) for p in peft_model.trainable_parameters().values()}
    frozen = snapshot({k: p for k, p in peft_model.base_parameters().items() if id(p) not in trainable})
    adapters = snapshot(peft_model.trainable_parameters())
    trainer = _sft(peft_model, tmp_path)
    trainer.train()
    assert trainer.model.is_activation_checkpointing
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert_only_adapters_changed(peft_model, frozen, adapters)
    reloaded = peftlab.load_adapter(tiny_model("llama", "causal-lm"), tmp_path / "checkpoint-2")
    torch.testing.assert_close(_logits(reloaded), _logits(peft_model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "prompt", "lora+prompt"])
def test_fused_lm_head_loss_equals_the_model_s_own_loss(method, tmp_path):
    """The fused head sits behind the hooks: virtual tokens are in the sequence and never scored."""
    torch.manual_seed(0)
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"), CONFIGS[method]())
    trainer = _sft(peft_model, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    peft_model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(trainer.model, dict(batch))
        own = peft_model(**batch).loss
    torch.testing.assert_close(fused, own, rtol=1e-5, atol=1e-6)
    assert "forward" in vars(peft_model.model) and "forward" not in vars(trainer.model)  # the head is inside


def test_fused_lm_head_refuses_an_adapter_on_lm_head(tmp_path):
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"),
                               peftlab.LoraConfig(r=4, target_modules=("q_proj", "lm_head")))
    with pytest.raises(peftlab.errors.ConfigError, match="lm_head"):
        _sft(peft_model, tmp_path)
