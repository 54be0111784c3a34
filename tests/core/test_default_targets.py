"""Default targets come from the architecture table, are written into files, and a second adapter
adapts exactly the modules the first did, on every architecture of the table.

Hugging Face PEFT is the oracle for the files: it refuses `target_modules: null` on an architecture
it has no default for (DistilBERT), so peftlab's files must name the resolved targets, and HF PEFT
must compute the same logits from them.
"""

from __future__ import annotations

import json

import pytest
import torch

import peftlab
from peftlab.core.architectures import ARCHITECTURES
from peftlab.methods.ia3 import IA3Config
from peftlab.methods.lora import LoraConfig
from tiny_models import TABLE_MODELS, logits_of, oracle_batch, perturb, tiny_model

peft = pytest.importorskip("peft", reason="Hugging Face PEFT (test oracle) is not installed: pip install peft")

CASES = [pytest.param(arch, task, id=f"{arch}-{task}") for arch, task in TABLE_MODELS]


def _lora_paths(model, name):
    return [path for path, layer in model.adapter_layers(name) if type(layer).__name__.startswith("Lora")]


@pytest.mark.parametrize("arch,task", CASES)
@pytest.mark.parametrize("config", [LoraConfig(r=4), IA3Config()], ids=["lora", "ia3"])
def test_default_target_files_name_the_targets_and_load_in_hf_peft_with_equal_logits(arch, task, config, tmp_path):
    batch = oracle_batch(task)
    ours = peftlab.apply(tiny_model(arch, task), config)
    perturb(ours.trainable_parameters().values(), seed=7)
    expected = logits_of(ours, batch)
    peftlab.save_adapter(ours, tmp_path)
    fields = json.loads((tmp_path / "adapter_config.json").read_text())
    assert fields["target_modules"], "files always name the resolved targets"
    theirs = peft.PeftModel.from_pretrained(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(logits_of(theirs, batch), expected, rtol=0, atol=1e-5)
    reloaded = peftlab.load_adapter(tiny_model(arch, task), tmp_path)
    torch.testing.assert_close(logits_of(reloaded, batch), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch,task", CASES)
def test_lora_defaults_are_the_query_and_value_projections_of_the_table(arch, task):
    model = peftlab.apply(tiny_model(arch, task), LoraConfig(r=4))
    wanted = {linear.path for linear in ARCHITECTURES[arch].with_roles(("q", "v"))}
    adapted = _lora_paths(model, "default")
    assert adapted and all(any(path.endswith("." + w) for w in wanted) for path in adapted)
    assert model.configs["default"].target_modules == ARCHITECTURES[arch].names(("q", "v"))


@pytest.mark.parametrize("arch,task", CASES)
@pytest.mark.parametrize("targets", [None, "all-linear"], ids=["default", "all-linear"])
def test_a_second_adapter_targets_exactly_the_modules_the_first_did(arch, task, targets):
    model = peftlab.apply(tiny_model(arch, task), LoraConfig(r=4, target_modules=targets))
    model.add_adapter("second", LoraConfig(r=2, target_modules=targets), activate=False)
    first = _lora_paths(model, "default")
    assert _lora_paths(model, "second") == first
    config = peft.LoraConfig(task_type="SEQ_CLS" if task == "classification" else "CAUSAL_LM", r=4,
                             target_modules=model.configs["default"].target_modules)
    if arch == "distilbert" and targets == "all-linear":
        # HF PEFT's own conflict: its modules_to_save entry "classifier" matches `pre_classifier` as a
        # string suffix, and all-linear makes that a LoRA layer too. peftlab adapts pre_classifier.
        with pytest.raises(TypeError, match="modules_to_save cannot be applied"):
            peft.get_peft_model(tiny_model(arch, task), config)
        return
    theirs = peft.get_peft_model(tiny_model(arch, task), config)
    counted = [name for name, module in theirs.named_modules() if isinstance(module, peft.tuners.lora.LoraLayer)]
    assert len(counted) == len(first)


def test_the_llama_case_of_the_issue_adapts_14_modules_twice():
    """Before: a second all-linear adapter on a LLaMA adapted 42 modules (lora_A, lora_B, base_layer)."""
    model = peftlab.apply(tiny_model("llama", "causal-lm"), LoraConfig(r=4, target_modules="all-linear"))
    model.add_adapter("b", LoraConfig(r=4, target_modules="all-linear"))
    assert len(_lora_paths(model, "default")) == len(_lora_paths(model, "b")) == 14
