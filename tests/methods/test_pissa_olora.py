"""PiSSA and OLoRA initialisation: the factors are the principal part (SVD) or the QR start of W, the
residual replaces W, the output at init is the base's, and files follow Hugging Face PEFT's
convention (`init_lora_weights: "pissa" | "olora"`, residual recomputed on loading) both ways."""

from __future__ import annotations

import pytest
import torch

import peftlab
from peftlab.errors import ConfigError, TargetError
from peftlab.methods.olora import OloraConfig
from peftlab.methods.pissa import PissaConfig
from tiny_models import logits_of, oracle_batch, perturb, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

CONFIGS = {"pissa": PissaConfig, "olora": OloraConfig}
CASES = [("bert", "classification", ["query", "value"]),
         ("gpt2", "causal-lm", ["c_attn", "c_fc"]),
         ("llama", "causal-lm", ["q_proj", "v_proj", "down_proj"])]
# HF PEFT's OLoRA factors a Conv1D weight in its stored (in, out) layout and so cannot take GPT-2;
# peftlab factors every weight in nn.Linear's (out, in) layout.
HF_CASES = [pytest.param(init, *case, id=f"{init}-{case[0]}-{case[1]}") for init in CONFIGS for case in CASES
            if not (init == "olora" and case[0] == "gpt2")]


@pytest.mark.parametrize("init", CONFIGS)
@pytest.mark.parametrize("arch,task,targets", CASES)
def test_output_at_init_equals_the_base(init, arch, task, targets):
    batch = oracle_batch(task)
    expected = logits_of(tiny_model(arch, task), batch)
    model = peftlab.apply(tiny_model(arch, task), CONFIGS[init](r=4, alpha=8, target_modules=tuple(targets)))
    torch.testing.assert_close(logits_of(model, batch), expected, rtol=0, atol=1e-5)


def test_pissa_factors_are_the_principal_part_and_the_residual_keeps_the_rest():
    base = tiny_model("llama")
    weight = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    model = peftlab.apply(base, PissaConfig(r=4, alpha=8, target_modules=("q_proj",)))
    layer = model.model.model.layers[0].self_attn.q_proj
    u, s, vh = torch.linalg.svd(weight)
    low_rank = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    torch.testing.assert_close(low_rank, u[:, :4] @ torch.diag(s[:4]) @ vh[:4], atol=1e-5, rtol=0)
    residual = torch.linalg.svdvals(layer.base_layer.weight.detach())
    torch.testing.assert_close(residual[:len(s) - 4], s[4:], atol=1e-5, rtol=0)


def test_olora_b_starts_orthonormal():
    model = peftlab.apply(tiny_model("bert"), OloraConfig(r=4, target_modules=("query",)))
    b = model.model.bert.encoder.layer[0].attention.self.query.lora_B["default"].weight
    torch.testing.assert_close(b.T @ b, torch.eye(4), atol=1e-5, rtol=0)


def test_what_cannot_take_a_residual_is_refused_and_disabling_is_declared_impossible():
    with pytest.raises(TargetError, match="pissa cannot wrap .*word_embeddings"):
        peftlab.apply(tiny_model("bert"), PissaConfig(target_modules=("query", "word_embeddings")))
    with pytest.raises(ConfigError, match="pissa: init='kaiming' is invalid"):
        PissaConfig(init="kaiming")
    model = peftlab.apply(tiny_model("bert"), OloraConfig(target_modules=("query",)))
    with pytest.raises(ConfigError, match="cannot be disabled"):
        with model.disable_adapters():
            pass


@pytest.mark.parametrize("init,arch,task,targets", HF_CASES)
def test_peftlab_file_loads_in_hf_peft_with_equal_logits(init, arch, task, targets, tmp_path):
    batch = oracle_batch(task)
    ours = peftlab.apply(tiny_model(arch, task), CONFIGS[init](r=4, alpha=8, target_modules=tuple(targets)))
    perturb(ours.trainable_parameters().values(), scale=0.02)
    expected = logits_of(ours, batch)
    peftlab.save_adapter(ours, tmp_path)
    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    assert theirs.peft_config["default"].init_lora_weights == init
    torch.testing.assert_close(logits_of(theirs, batch), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("init,arch,task,targets", HF_CASES)
def test_hf_peft_file_loads_in_peftlab_with_equal_logits(init, arch, task, targets, tmp_path):
    batch = oracle_batch(task)
    task_type = "SEQ_CLS" if task == "classification" else "CAUSAL_LM"
    theirs = peft.get_peft_model(tiny_model(arch, task), peft.LoraConfig(
        task_type=task_type, r=4, lora_alpha=8, target_modules=targets, init_lora_weights=init))
    perturb([p for p in theirs.parameters() if p.requires_grad], scale=0.02)
    expected = logits_of(theirs, batch)
    theirs.save_pretrained(tmp_path)
    ours = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    assert ours.configs["default"].method == init
    torch.testing.assert_close(logits_of(ours, batch), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_of(ours.merge_and_unload(), batch), expected, rtol=0, atol=1e-5)
