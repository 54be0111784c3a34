"""The 4-bit loader's own safetensors reader checks headers like safetensors' reader does (issue 22):
a damaged file is one PeftlabError naming it, never MemoryError, IndexError or uninitialised weights."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from peftlab.errors import PeftlabError
from peftlab.quant.loading import _Checkpoint

TENSORS = {"a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b.bias": torch.ones(5)}


@pytest.fixture
def folder(tmp_path):
    save_file(TENSORS, str(tmp_path / "model.safetensors"))
    return tmp_path


def parts(path):
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def write(path, header, body, length=None):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)


def read_all(folder):
    checkpoint = _Checkpoint(folder, "")
    return {key: checkpoint.read(key) for key in checkpoint.entries}


def test_an_intact_file_reads_exactly(folder):
    got = read_all(folder)
    assert set(got) == set(TENSORS) and all(torch.equal(got[k], TENSORS[k]) for k in TENSORS)


def test_a_huge_header_length_is_refused_not_a_memory_error(folder):
    header, body = parts(folder / "model.safetensors")
    write(folder / "model.safetensors", header, body, length=2**63)
    with pytest.raises(PeftlabError, match="header length 9223372036854775808 does not fit a file of"):
        read_all(folder)


@pytest.mark.parametrize("cut", [1, 7, 20, 2000])
def test_a_cut_short_file_is_refused_not_an_index_error(folder, cut):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-cut] if cut < path.stat().st_size else path.read_bytes()[:3])
    with pytest.raises(PeftlabError, match="model.safetensors: .*; the file is damaged or not a safetensors file"):
        read_all(folder)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["a.weight"].update(dtype="F99"), "tensor 'a.weight' has no known dtype"),
    (lambda h: h["a.weight"].update(shape=[3, -4]), "has shape [3, -4], not a list of counts"),
    (lambda h: h["a.weight"].update(shape=[4, 4]), "tensor 'a.weight' has 48 bytes, F32 [4, 4] needs 64"),
    (lambda h: h["b.bias"].update(data_offsets=[0, 20]), "starts at byte 0, the previous one ends at 20"),
    (lambda h: h["b.bias"].update(data_offsets="x"), "has data_offsets 'x', not [start, end]"),
    (lambda h: h.update(c={"dtype": "F32", "shape": [1], "data_offsets": [68, 72]}), "past the 68 the file holds"),
])
def test_a_header_that_does_not_fit_its_data_is_refused(folder, edit, message):
    header, body = parts(folder / "model.safetensors")
    edit(header)
    write(folder / "model.safetensors", header, body)
    with pytest.raises(PeftlabError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_all(folder)


@pytest.mark.parametrize("tensor, message", [
    (torch.tensor([1.0, float("nan")]), "tensor 'w' holds NaN or infinite values"),
    (torch.ones(2, dtype=torch.int64), "tensor 'w' is int64, weights must be floating point"),
])
def test_weights_must_be_float_and_finite(tmp_path, tensor, message):
    save_file({"w": tensor}, str(tmp_path / "model.safetensors"))
    with pytest.raises(PeftlabError, match=message):
        read_all(tmp_path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "missing.safetensors", 5])
def test_shard_names_stay_inside_the_folder(folder, shard):
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": shard}}))
    with pytest.raises(PeftlabError, match="model.safetensors.index.json: it names"):
        read_all(folder)


def test_a_zero_size_tensor_sharing_its_offset_reads_in_any_header_order(tmp_path):
    """Found by the header fuzz: entries were ordered by start offset only, so a zero-size tensor
    listed after the tensor starting at the same offset looked like a gap."""
    save_file({"a.weight": torch.ones(2), "b.empty": torch.zeros(0, 3)}, str(tmp_path / "model.safetensors"))
    header, body = parts(tmp_path / "model.safetensors")
    for order in (["a.weight", "b.empty"], ["b.empty", "a.weight"]):
        write(tmp_path / "model.safetensors", {key: header[key] for key in order}, body)
        got = read_all(tmp_path)
        assert got["b.empty"].shape == (0, 3) and torch.equal(got["a.weight"], torch.ones(2))
