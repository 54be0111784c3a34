"""Fuzz: the contents of adapter_model.safetensors.

Each case rewrites a saved LoRA adapter's tensor file: per tensor a dtype (float or not), NaN or
infinite values at a random place, another shape, a dropped key, extra keys (including base
weights), or raw damage to the bytes (cut short, flipped, garbage). Loading it into a tiny BERT
(what `peftlab eval` and `merge` call after building the model) either gives an adapter whose
weights are the file's values (cast to float32) and whose outputs follow from them, or one
AdapterFileError line that leaves the model as it was. The file's config is fixed: configs are
fuzzed with the method-config validation (issue 18).
"""

from __future__ import annotations

import peftlab
import pytest
import torch
from fuzz_helpers import CASES
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tiny_models import tiny_batch, tiny_model

from peftlab.core.files import WEIGHTS_NAME
from peftlab.errors import AdapterFileError

FLOATS = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
OTHERS = [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-adapter") / "adapter"
    saved = peftlab.apply(tiny_model("bert"), peftlab.LoraConfig(r=2, alpha=4, target_modules=("query", "value")))
    peftlab.save_adapter(saved, folder)
    model = peftlab.PeftModel(tiny_model("bert"))
    with torch.no_grad():
        base_logits = model(**tiny_batch()).logits
    return {"folder": folder, "tensors": load_file(str(folder / WEIGHTS_NAME)), "model": model,
            "base_logits": base_logits}


@st.composite
def tensor_files(draw, tensors: dict[str, torch.Tensor]):
    """(the tensors to write, the damage done to the file's bytes, a seed for where). Half the
    cases only change float types and values, so loads that must succeed are as common as refusals."""
    hostile = draw(st.booleans())
    chosen = {}
    for key, tensor in tensors.items():
        if hostile and draw(st.integers(0, 30)) == 0:
            continue  # a dropped key
        if hostile and draw(st.integers(0, 30)) == 0:
            tensor = torch.zeros(*(n + 1 for n in tensor.shape))  # another shape
        values = tensor * draw(st.sampled_from([1.0, -3.0, 1e4]))
        if hostile and draw(st.integers(0, 12)) == 0:
            flat = values.reshape(-1).clone()
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([float("nan"), float("inf"),
                                                                                  float("-inf")]))
            values = flat.reshape(values.shape)
        dtype = draw(st.sampled_from(FLOATS * 6 + OTHERS if hostile else FLOATS))
        chosen[key] = values.to(dtype)
    extras = st.sampled_from(["base_model.model.bert.encoder.layer.0.attention.self.key.lora_A.weight",
                              "base_model.model.bert.embeddings.word_embeddings.weight", "prompt_embeddings", "x"])
    for extra in draw(st.lists(extras, max_size=2)) if hostile else ():
        chosen[extra] = torch.zeros(128, 32) if "word_embeddings" in extra else torch.ones(2, 32)
    damage = draw(st.sampled_from(["none"] * 6 + ["cut", "flip", "garbage", "empty"])) if hostile else "none"
    return chosen, damage, draw(st.integers(0, 2**31))


def write(path, chosen, damage, seed) -> None:
    save_file({k: v.contiguous() for k, v in chosen.items()}, str(path))
    data = bytearray(path.read_bytes())
    position = seed % max(1, len(data))
    if damage == "cut":
        data = data[:position]
    elif damage == "flip":
        data[position] ^= 1 + seed % 255
    elif damage == "garbage":
        data = bytearray(seed.to_bytes(8, "little") * 5)
    elif damage == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


def test_adapter_tensor_files_fuzzed(world, tmp_path_factory):
    folder, model = world["folder"], world["model"]
    weights = folder / WEIGHTS_NAME
    outcomes = []

    @given(tensor_files(world["tensors"]))
    def case(generated):
        chosen, damage, seed = generated
        write(weights, chosen, damage, seed)
        try:
            on_disk = load_file(str(weights))
        except Exception:  # safetensors itself cannot read it
            on_disk = None
        try:
            peftlab.load_adapter(model, folder, name="fuzzed")
        except AdapterFileError as refused:
            assert "\n" not in str(refused) and str(refused).startswith(str(weights))
            assert model.configs == {}
            outcomes.append("refused")
        else:
            assert on_disk is not None and set(on_disk) == set(world["tensors"])
            assert all(t.is_floating_point() and torch.isfinite(t.float()).all() for t in on_disk.values())
            state = peftlab.core.files.adapter_state(model, "fuzzed")
            for key, tensor in on_disk.items():  # the file's values, cast once to float32
                assert state[key].dtype == torch.float32
                assert torch.equal(state[key], tensor.to(torch.float32)), key
            with torch.no_grad():
                assert torch.isfinite(model(**tiny_batch()).logits).all()
            model.delete_adapter("fuzzed")
            outcomes.append("loaded")
        with torch.no_grad():  # a refused or deleted adapter leaves the base model as it was
            torch.testing.assert_close(model(**tiny_batch()).logits, world["base_logits"], rtol=0, atol=0)

    case()
    assert len(outcomes) >= CASES and outcomes.count("loaded") >= CASES // 4 and "refused" in outcomes
