"""Fuzz: checkpoint folders (complete.json, state.json, the trainable / optimizer / rng tensor files).

A run of 3 steps leaves checkpoints step-2 and step-3. Each case copies them, damages one or both
(bytes flipped, cut or added, files deleted, JSON fields removed or replaced, tensors recast,
made NaN, reshaped, renamed) and resumes the run through `train(..., resume_from=...)`, what
`peftlab train --resume` calls once the model and data are loaded. In half the cases the damage
also rewrites complete.json's checksums (a hand edit that verifies). Then:

- checksums not rewritten: the newest intact checkpoint (byte for byte) is the one resumed, and
  the run ends with the uninterrupted run's adapter within 1e-6; none intact is one line;
- checksums rewritten: the run resumes with finite weights, or stops with one PeftlabError line
  before anything is restored; never another exception.
Nothing is written (the resumed run checkpoints nowhere).
"""

from __future__ import annotations

import json
import shutil

import peftlab
import pytest
import torch
from fuzz_helpers import CASES, files_under
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from train_helpers import minilm_tokenizer, tiny_bert, toy_task

from peftlab.errors import PeftlabError
from peftlab.train import TrainConfig, train
from peftlab.train.checkpoint import COMPLETE
from peftlab.train.checkpoint_verify import file_record

RUN = TrainConfig(learning_rate=1e-2, max_steps=3, batch_size=4, num_threads=1, log_every=1, warmup_steps=1,
                  checkpoint_every=1)
RESUME = RUN.replace(checkpoint_every=None)  # a runtime change a resume accepts: it writes nothing
FILES = ["trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", COMPLETE]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=5)


def lora():
    torch.manual_seed(0)
    return peftlab.apply(tiny_bert(dropout=0.1), peftlab.LoraConfig(r=2, alpha=4, target_modules=("query",),
                                                                    dropout=0.1))


def trained(model) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.trainable_parameters().items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-checkpoints")
    task, tokenizer = toy_task(train=16, dev=0), minilm_tokenizer()
    model = lora()
    train(model, task, tokenizer, RUN, checkpoint_dir=root / "original", progress=False)
    assert sorted(p.name for p in (root / "original").iterdir()) == ["latest", "step-2", "step-3"]
    return {"root": root, "task": task, "tokenizer": tokenizer, "expected": trained(model), "model": lora()}


@st.composite
def damages(draw):
    """A list of (checkpoint, file, how) and whether the checksums are rewritten afterwards."""
    targets = st.tuples(st.sampled_from(["step-3", "step-3", "step-2"]), st.sampled_from(FILES),
                        st.sampled_from(["flip", "cut", "append", "delete", "json", "tensors", "same"]))
    return draw(st.lists(targets, min_size=1, max_size=3)), draw(st.booleans()), draw(st.integers(0, 2**31))


def _edit_json(value, draw_value, seed: int):
    """Replace or remove one field somewhere inside `value` (a JSON document), chosen by `seed`."""
    node, depth = value, seed % 4
    while depth and isinstance(node, (dict, list)) and node:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        child = node[keys[seed % len(keys)]]
        if not isinstance(child, (dict, list)) or not child:
            break
        node, depth, seed = child, depth - 1, seed // 7
    if isinstance(node, dict) and node:
        key = list(node)[seed % len(node)]
        if seed % 3 == 0:
            del node[key]
        else:
            node[key] = draw_value
    elif isinstance(node, list) and node:
        node[seed % len(node)] = draw_value
    return value


def _edit_tensors(tensors: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    key = sorted(tensors)[seed % len(tensors)]
    tensor, how = tensors[key], seed % 5
    if how == 0:
        tensors[key] = tensor.to([torch.float16, torch.int8, torch.bool, torch.float64, torch.uint8][seed // 5 % 5])
    elif how == 1 and tensor.is_floating_point() and tensor.numel():
        tensors[key] = tensor.reshape(-1).index_fill(0, torch.tensor([0]), float("nan")).reshape(tensor.shape)
    elif how == 2:
        tensors[key] = torch.zeros(tensor.numel() + 1, dtype=tensor.dtype)
    elif how == 3:
        tensors[key + ".renamed"] = tensors.pop(key)
    else:
        tensors[key] = torch.randint(0, 256, tensor.shape, dtype=torch.uint8).to(tensor.dtype) \
            if tensor.dtype == torch.uint8 else tensor * 1.5
    return tensors


def damage(folder, file, how, seed, draw_value) -> None:
    path = folder / file
    if not path.exists():
        return
    data = bytearray(path.read_bytes())
    if how == "flip" and data:
        data[seed % len(data)] ^= 1 + seed % 255
    elif how == "cut":
        data = data[:seed % max(1, len(data))]
    elif how == "append":
        data += b"\x00junk"
    elif how == "delete":
        path.unlink()
        return
    elif how == "json" and file.endswith(".json"):
        try:
            document = json.loads(data)
        except ValueError:
            return
        data = bytearray(json.dumps(_edit_json(document, draw_value, seed)).encode())
    elif how == "tensors" and file.endswith(".safetensors"):
        try:
            tensors = load_file(str(path))
        except Exception:  # already damaged by an earlier change of this case
            return
        save_file(_edit_tensors(tensors, seed), str(path))
        return
    path.write_bytes(bytes(data))


def rewrite_checksums(folder) -> None:
    marker_path = folder / COMPLETE
    try:
        marker = json.loads(marker_path.read_text())
        marker["files"] = {name: file_record(folder / name) for name in FILES[:-1] if (folder / name).exists()}
    except (OSError, ValueError, TypeError, KeyError):
        return  # a marker damaged beyond use: the checkpoint is simply incomplete
    marker_path.write_text(json.dumps(marker))


def intact(folder, original) -> bool:
    return all((folder / name).is_file() and (folder / name).read_bytes() == (original / name).read_bytes()
               for name in FILES)


def test_checkpoints_fuzzed(world):
    root, model = world["root"], world["model"]
    case_dir = root / "case"
    shutil.copytree(root / "original", case_dir)
    original = {path: path.read_bytes() for path in case_dir.rglob("*") if path.is_file()}
    outcomes = []

    @given(damages(), json_values)
    def case(generated, draw_value):
        changes, rewrite, seed = generated
        for path, data in original.items():  # the files as written; only damaged ones are rewritten,
            if not path.is_file() or path.read_bytes() != data:  # since truncating a file is slow here
                path.write_bytes(data)
        for index, (step, file, how) in enumerate(changes):
            damage(case_dir / step, file, how, seed + index, draw_value)
        if rewrite:
            for step in {step for step, _, _ in changes}:
                rewrite_checksums(case_dir / step)
        usable = [step for step in ("step-3", "step-2") if intact(case_dir / step, root / "original" / step)]
        before = files_under(case_dir)
        try:
            train(model, world["task"], world["tokenizer"], RESUME, resume_from=case_dir, progress=False)
        except PeftlabError as refused:
            assert "\n" not in str(refused)
            assert rewrite or not usable, f"refused although {usable} are intact: {refused}"
            outcomes.append("refused")
        else:
            adapter = trained(model)
            assert all(torch.isfinite(t).all() for t in adapter.values())
            if "step-3" in usable or (usable and not rewrite):  # an intact one resumed: the uninterrupted end
                for key, value in adapter.items():
                    assert (value - world["expected"][key]).abs().max() <= 1e-6, key
            outcomes.append("resumed")
        assert files_under(case_dir) == before

    case()
    assert len(outcomes) >= CASES and outcomes.count("resumed") >= CASES // 5 and "refused" in outcomes
