"""Adapter folders: Hugging Face PEFT layout, atomic writes, strict and actionable loading."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import peftlab
from peftlab.core.files import CONFIG_NAME, WEIGHTS_NAME
from peftlab.errors import AdapterFileError
from tiny_models import tiny_model


@pytest.fixture
def saved(tmp_path):
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=4, alpha=8))
    peftlab.save_adapter(model, tmp_path / "adapter")
    return tmp_path / "adapter"


def test_layout_matches_hugging_face_peft(saved):
    config = json.loads((saved / CONFIG_NAME).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and config["modules_to_save"] == ["classifier"]
    keys = set(load_file(saved / WEIGHTS_NAME))
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in keys
    assert "base_model.model.classifier.weight" in keys
    assert not any(".default." in k for k in keys)
    assert sorted(p.name for p in saved.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary leftovers


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(AdapterFileError, match="does not exist"):
        peftlab.load_adapter(tiny_model("bert"), tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterFileError, match="adapter_config.json is missing"):
        peftlab.load_adapter(tiny_model("bert"), tmp_path / "empty")


def test_corrupt_weights_file(saved):
    (saved / WEIGHTS_NAME).write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(AdapterFileError, match="corrupt"):
        peftlab.load_adapter(tiny_model("bert"), saved)


def test_corrupt_config_file(saved):
    (saved / CONFIG_NAME).write_text("{not json")
    with pytest.raises(AdapterFileError, match="not valid JSON"):
        peftlab.load_adapter(tiny_model("bert"), saved)


def test_adapter_for_another_model_reports_every_category(saved):
    tensors = load_file(saved / WEIGHTS_NAME)
    tensors.pop("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight")
    tensors["base_model.model.bert.encoder.layer.7.attention.self.query.lora_A.weight"] = torch.zeros(4, 32)
    tensors["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"] = torch.zeros(5, 32)
    save_file(tensors, saved / WEIGHTS_NAME)
    with pytest.raises(AdapterFileError) as error:
        peftlab.load_adapter(tiny_model("bert"), saved)
    message = str(error.value)
    assert "missing 1" in message and "unexpected 1" in message and "shape mismatch 1" in message
    assert "(file (5, 32), model (4, 32))" in message


def test_failed_load_leaves_the_model_without_the_adapter(saved):
    (saved / WEIGHTS_NAME).write_bytes(b"garbage")
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2), "other")
    with pytest.raises(AdapterFileError):
        peftlab.load_adapter(model, saved, "default")
    assert list(model.configs) == ["other"]


def test_loading_two_named_adapters_into_one_model(saved, tmp_path):
    second = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2, target_modules=("key",)))
    peftlab.save_adapter(second, tmp_path / "second")
    model = peftlab.load_adapter(tiny_model("bert"), saved, "first")
    peftlab.load_adapter(model, tmp_path / "second", "second")
    assert list(model.configs) == ["first", "second"]
    assert model.configs["second"].target_modules == ("key",)


def test_full_fine_tuning_round_trip(tmp_path):
    model = peftlab.apply(tiny_model("llama", "causal-lm"), peftlab.FullConfig())
    with torch.no_grad():
        model.model.model.norm.weight.fill_(0.5)
    peftlab.save_adapter(model, tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["peftlab"]["method"] == "full"
    reloaded = peftlab.load_adapter(tiny_model("llama", "causal-lm"), tmp_path)
    assert torch.all(reloaded.model.model.norm.weight == 0.5)
