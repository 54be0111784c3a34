"""A combination saved as one folder (a Hugging Face PEFT folder per component + a manifest)."""

from __future__ import annotations

import json

import pytest
import torch

import peftlab
from peftlab.core.combination_files import MANIFEST_NAME
from peftlab.core.adapter_io import read_config
from peftlab.errors import AdapterFileError
from tiny_models import tiny_batch, tiny_model

CASES = [("bert", "lora+prompt"), ("gpt2", "lora+adapters"), ("llama", "lora+prompt"), ("llama", "lora+adapters")]
FIELDS = {"lora": {"r": 4, "alpha": 8}, "prompt": {"num_virtual_tokens": 3},
          "adapters": {"bottleneck_size": 4, "placement": "pfeiffer"}}


def trained(arch: str, methods: str):
    parts = methods.split("+")
    config = peftlab.make_config(methods, **{p: FIELDS[p] for p in parts}, lr_scales={parts[1]: 30.0})
    model = peftlab.apply(tiny_model(arch), config)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for param in model.adapter_parameters("default").values():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model


def logits(model):
    with torch.no_grad():
        return model(**tiny_batch()).logits


@pytest.mark.parametrize("arch,methods", CASES)
def test_save_load_round_trip_restores_every_part_active(arch, methods, tmp_path):
    model = trained(arch, methods)
    peftlab.save_adapter(model, tmp_path)
    parts = methods.split("+")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*parts, MANIFEST_NAME])
    for part in parts:  # every component is an ordinary adapter folder
        assert (tmp_path / part / "adapter_config.json").is_file()
    loaded = peftlab.load_adapter(tiny_model(arch), tmp_path)
    assert loaded.active_adapters == tuple(f"default:{p}" for p in parts)
    assert loaded.learning_rate_scales() == model.learning_rate_scales()
    torch.testing.assert_close(logits(loaded), logits(model), rtol=0, atol=1e-6)


def test_a_component_loads_alone_as_a_plain_adapter(tmp_path):
    model = trained("bert", "lora+prompt")
    peftlab.save_adapter(model, tmp_path)
    alone = peftlab.load_adapter(tiny_model("bert"), tmp_path / "lora")
    model.set_active("default:lora")
    torch.testing.assert_close(logits(alone), logits(model), rtol=0, atol=1e-6)


def test_missing_or_corrupt_parts_are_one_error_and_leave_the_model_untouched(tmp_path):
    peftlab.save_adapter(trained("llama", "lora+prompt"), tmp_path)
    weights = tmp_path / "prompt" / "adapter_model.safetensors"
    saved = weights.read_bytes()
    weights.unlink()
    base = tiny_model("llama")
    with pytest.raises(AdapterFileError, match="component 'prompt' is missing") as raised:
        peftlab.load_adapter(base, tmp_path)
    assert "\n" not in str(raised.value)
    weights.write_bytes(saved[:40])
    target = peftlab.PeftModel(base)
    with pytest.raises(AdapterFileError, match="prompt/adapter_model.safetensors is corrupt"):
        peftlab.load_adapter(target, tmp_path)
    assert target.configs == {} and target.combinations == {}
    assert not any(isinstance(m, peftlab.core.AdapterLayer) for m in base.modules())
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(AdapterFileError, match="not a valid combination manifest"):
        peftlab.load_adapter(base, tmp_path)


def test_a_taken_name_or_another_model_is_refused_and_another_name_works(tmp_path):
    peftlab.save_adapter(trained("llama", "lora+adapters"), tmp_path)
    other = peftlab.load_adapter(tiny_model("llama"), tmp_path / "lora")  # a PeftModel with adapter "default"
    with pytest.raises(peftlab.errors.ConfigError, match="exists already"):
        peftlab.load_adapter(other, tmp_path)
    loaded = peftlab.load_adapter(other, tmp_path, name="mix")
    assert loaded.active_adapters == ("mix:lora", "mix:adapters")
    bert = peftlab.PeftModel(tiny_model("bert"))
    with pytest.raises(AdapterFileError, match="does not match this model .lora: target module.s. .q_proj"):
        peftlab.load_adapter(bert, tmp_path)
    assert bert.configs == {} and not any(isinstance(m, peftlab.core.AdapterLayer) for m in bert.modules())


# --- no path leaves the combination folder (issue 22) ------------------------------------------
def _manifest(folder):
    return json.loads((folder / MANIFEST_NAME).read_text())


def _rewrite(folder, **changes):
    manifest = _manifest(folder)
    for index, entry in changes.items():
        manifest["components"][int(index.removeprefix("c"))].update(entry)
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


@pytest.fixture
def combination(tmp_path):
    """A lora+prompt combination in tmp_path/mix, and a copy of its prompt part outside it."""
    folder = tmp_path / "deep" / "mix"
    peftlab.save_adapter(trained("bert", "lora+prompt"), folder)
    import shutil
    shutil.copytree(folder / "prompt", tmp_path / "outside_part")
    return folder


@pytest.mark.parametrize("folder_name", ["../../outside_part", "ABSOLUTE"])
def test_a_manifest_folder_outside_the_combination_is_refused(combination, folder_name):
    outside = combination.parents[1] / "outside_part"
    _rewrite(combination, c1={"folder": str(outside) if folder_name == "ABSOLUTE" else folder_name})
    with pytest.raises(AdapterFileError, match="must be a plain name .* inside the combination folder") as raised:
        peftlab.load_adapter(tiny_model("bert"), combination)
    assert "\n" not in str(raised.value)


def test_a_component_folder_linked_out_of_the_combination_is_refused(combination):
    (combination / "linked").symlink_to(combination.parents[1] / "outside_part")
    _rewrite(combination, c1={"folder": "linked"})
    with pytest.raises(AdapterFileError, match="'linked' is a link that leads out of"):
        peftlab.load_adapter(tiny_model("bert"), combination)
    _rewrite(combination, c1={"folder": "prompt"})
    weights = combination / "prompt" / "adapter_model.safetensors"
    weights.rename(combination.parents[1] / "moved.safetensors")
    weights.symlink_to(combination.parents[1] / "moved.safetensors")
    with pytest.raises(AdapterFileError, match="prompt/adapter_model.safetensors is a link that leads out of"):
        peftlab.load_adapter(tiny_model("bert"), combination)


@pytest.mark.parametrize("field, value, message", [
    ("folder", 5, "component folder 5 must be a plain name"),
    ("folder", None, "component folder None must be a plain name"),
    ("name", "/tmp/elsewhere", "component name '/tmp/elsewhere' must be a plain name"),
    ("name", "lora", "component names \\['lora', 'lora'\\] repeat"),
    ("lr_scale", float("nan"), "lr_scale must be a finite number > 0, got nan"),
    ("lr_scale", "3", "lr_scale must be a finite number > 0, got '3'"),
    ("lr_scale", True, "lr_scale must be a finite number > 0, got True"),
])
def test_bad_manifest_entries_are_one_error(combination, field, value, message):
    _rewrite(combination, c1={field: value})
    with pytest.raises(AdapterFileError, match=message) as raised:
        read_config(combination)
    assert "\n" not in str(raised.value)


def test_a_component_named_by_a_path_never_writes_outside_the_folder(tmp_path):
    """Loaded then saved, a combination writes only inside the folder it is saved to."""
    evil = tmp_path / "evil-target"
    with pytest.raises(peftlab.errors.ConfigError, match="component name .* is invalid"):
        peftlab.CombinationConfig((peftlab.Component(str(evil), peftlab.LoraConfig(r=2)),
                                   peftlab.Component("p", peftlab.PromptConfig(num_virtual_tokens=2))))
    model = trained("bert", "lora+prompt")
    peftlab.save_adapter(model, tmp_path / "saved")
    again = peftlab.load_adapter(tiny_model("bert"), tmp_path / "saved")
    peftlab.save_adapter(again, tmp_path / "again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "saved"]
    assert not evil.exists()


def test_saving_over_a_combination_replaces_it_whole_and_keeps_other_files(tmp_path):
    peftlab.save_adapter(trained("bert", "lora+prompt"), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    model = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2))
    peftlab.save_adapter(model, tmp_path)  # a plain adapter where a combination was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                          "notes.txt"]
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 2


def test_a_manifest_listing_the_head_carrier_second_is_refused_and_the_base_stays(combination):
    """Found by the manifest fuzz: listed second, the lora part's head copy was written into the
    base model's classifier (kept after delete_adapter)."""
    manifest = _manifest(combination)
    manifest["components"].reverse()
    (combination / MANIFEST_NAME).write_text(json.dumps(manifest))
    model = peftlab.PeftModel(tiny_model("bert"))
    before = logits(model)
    with pytest.raises(AdapterFileError, match="component 'lora' holds the head copy .* list it first"):
        peftlab.load_adapter(model, combination)
    torch.testing.assert_close(logits(model), before, rtol=0, atol=0)
