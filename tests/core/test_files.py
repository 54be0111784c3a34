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


# --- loaded tensors are checked (issue 22) ------------------------------------------------------
def _rewrite_tensors(saved, change):
    tensors = load_file(saved / WEIGHTS_NAME)
    save_file({key: change(key, tensor) for key, tensor in tensors.items()}, saved / WEIGHTS_NAME)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_or_infinite_adapter_is_refused_naming_the_tensor(saved, value):
    _rewrite_tensors(saved, lambda key, tensor: torch.full_like(tensor, value))
    model = peftlab.PeftModel(tiny_model("bert"))
    with pytest.raises(AdapterFileError, match=r"adapter_model.safetensors: tensor 'base_model\.model\..*' holds "
                                               "NaN or infinite values; the adapter cannot be used") as raised:
        peftlab.load_adapter(model, saved)
    assert "\n" not in str(raised.value) and model.configs == {}


def test_one_nan_value_in_one_tensor_is_enough(saved):
    key = "base_model.model.bert.encoder.layer.1.attention.self.value.lora_A.weight"
    _rewrite_tensors(saved, lambda k, t: t.index_fill(1, torch.tensor([3]), float("nan")) if k == key else t)
    with pytest.raises(AdapterFileError, match=f"tensor '{key}' holds NaN"):
        peftlab.load_adapter(tiny_model("bert"), saved)


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.uint8, torch.int64])
def test_integer_and_bool_tensors_are_refused_not_cast(saved, dtype):
    _rewrite_tensors(saved, lambda key, tensor: tensor.to(dtype))
    with pytest.raises(AdapterFileError, match=f"is {str(dtype).removeprefix('torch.')}, weights must be floating"):
        peftlab.load_adapter(tiny_model("bert"), saved)


def test_float16_tensors_load_cast_with_one_warning(saved, caplog):
    _rewrite_tensors(saved, lambda key, tensor: (tensor + 0.25).to(torch.float16))
    with caplog.at_level("WARNING", logger="peftlab"):
        model = peftlab.load_adapter(tiny_model("bert"), saved)
    casts = [r.getMessage() for r in caplog.records if "cast from" in r.getMessage()]
    assert len(casts) == 1 and casts[0].endswith("tensor(s) cast from float16 to float32")
    for key, value in model.adapter_parameters("default").items():
        assert value.dtype == torch.float32 and torch.all(value == value.half().float()), key


def test_saving_over_an_adapter_replaces_it_whole_and_keeps_other_files(saved):
    (saved / "README.md").write_text("mine")
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2))
    peftlab.save_adapter(model, saved)
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert sorted(p.name for p in saved.parent.iterdir()) == ["adapter"]  # no temporaries
    assert json.loads((saved / CONFIG_NAME).read_text())["r"] == 2


def test_a_base_weight_of_a_module_the_adapter_does_not_wrap_is_unexpected(saved):
    """HF PEFT files may carry a targeted embedding's full weight; any other base weight in a file
    would silently overwrite the base model, which delete_adapter could not undo."""
    key = "base_model.model.bert.embeddings.word_embeddings.weight"
    _rewrite_tensors(saved, lambda k, t: t)
    tensors = load_file(saved / WEIGHTS_NAME)
    tensors[key] = torch.zeros(128, 32)
    save_file(tensors, saved / WEIGHTS_NAME)
    base = tiny_model("bert")
    before = base.bert.embeddings.word_embeddings.weight.detach().clone()
    with pytest.raises(AdapterFileError, match=f"unexpected 1: {key}"):
        peftlab.load_adapter(base, saved)
    assert torch.equal(base.bert.embeddings.word_embeddings.weight, before)
