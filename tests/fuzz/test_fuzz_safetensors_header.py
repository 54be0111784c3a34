"""Fuzz: the headers peftlab's own 4-bit loader reads (`quant/loading.py`, `_Checkpoint`).

Each case writes a model.safetensors whose header length, JSON entries (dtype, shape, offsets,
metadata) or data bytes are generated, then opens it and reads every tensor. safetensors' own
reader is the oracle: whatever peftlab reads, safetensors reads too, with the same values; whatever
safetensors refuses, peftlab refuses, as one PeftlabError naming the file, never MemoryError,
IndexError, a struct error or uninitialised memory. (peftlab refuses more: non-float and
non-finite weights.)
"""

from __future__ import annotations

import json
import struct

import torch
from fuzz_helpers import CASES
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load as safetensors_load
from safetensors.torch import save

from peftlab.errors import PeftlabError
from peftlab.quant.loading import _Checkpoint

TENSORS = {"embed.weight": torch.randn(4, 3), "layer.bias": torch.randn(5, dtype=torch.float64),
           "norm.weight": torch.ones(2, dtype=torch.bfloat16), "scalar": torch.tensor(2.5, dtype=torch.float16),
           "empty": torch.zeros(0, 3)}
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "X", "", "f32"]


def split(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


ORIGINAL = save(TENSORS, metadata={"format": "pt"})
HEADER, BODY = split(ORIGINAL)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=3), max_leaves=6)
counts = st.one_of(st.integers(0, 12), st.integers(-3, 2**64), json_values)


@st.composite
def files(draw) -> bytes:
    if draw(st.booleans()):  # benign: the same tensors, entries in another order, padded header
        keys = draw(st.permutations(list(HEADER)))
        text = json.dumps({key: HEADER[key] for key in keys}).encode() + b" " * draw(st.integers(0, 9))
        return struct.pack("<Q", len(text)) + text + BODY
    header = json.loads(json.dumps(HEADER))
    for key in list(header):
        if key == "__metadata__" or not draw(st.integers(0, 4)) == 0:
            continue
        entry = header[key]
        change = draw(st.sampled_from(["dtype", "shape", "offsets", "drop", "replace"]))
        if change == "dtype":
            entry["dtype"] = draw(st.sampled_from(DTYPES) | json_values)
        elif change == "shape":
            entry["shape"] = draw(st.lists(counts, max_size=3) | json_values)
        elif change == "offsets":
            entry["data_offsets"] = draw(st.lists(counts, min_size=0, max_size=3) | json_values)
        elif change == "drop":
            del header[key]
        else:
            header[key] = draw(json_values)
    if draw(st.integers(0, 8)) == 0:
        header["__metadata__"] = draw(json_values)
    if draw(st.integers(0, 8)) == 0:
        header = draw(json_values)
    text = json.dumps(header).encode()
    if draw(st.integers(0, 10)) == 0:
        text = text[:draw(st.integers(0, len(text)))]  # a header cut inside its JSON
    length = draw(st.sampled_from(["exact"] * 6 + ["random", "near", "huge"]))
    length = {"exact": len(text), "random": draw(st.integers(0, 2**64 - 1)), "huge": 2**63,
              "near": max(0, len(text) + draw(st.integers(-3, 3)))}[length]
    body = BODY
    tail = draw(st.sampled_from(["same"] * 5 + ["cut", "extend", "garbage"]))
    if tail == "cut":
        body = body[:draw(st.integers(0, len(body)))]
    elif tail == "extend":
        body = body + draw(st.binary(min_size=1, max_size=16))
    elif tail == "garbage":
        body = draw(st.binary(max_size=len(body)))
    data = struct.pack("<Q", length) + text + body
    return data[:draw(st.integers(0, 7))] if draw(st.integers(0, 30)) == 0 else data


def test_safetensors_headers_fuzzed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz-header")
    outcomes = []

    @given(files())
    def case(data):
        (folder / "model.safetensors").write_bytes(data)
        try:
            expected = safetensors_load(data)
        except Exception:
            expected = None
        try:
            checkpoint = _Checkpoint(folder, "")
            got = {key: checkpoint.read(key) for key in checkpoint.entries}
        except PeftlabError as refused:
            assert "\n" not in str(refused) and str(folder / "model.safetensors") in str(refused)
            outcomes.append("refused")
            return
        assert expected is not None, "peftlab read a file safetensors refuses"
        assert set(got) == set(expected)
        for key, tensor in got.items():
            assert tensor.dtype == expected[key].dtype and torch.equal(tensor, expected[key]), key
        outcomes.append("read")

    case()
    assert len(outcomes) >= CASES and outcomes.count("read") >= CASES // 4 and "refused" in outcomes


def test_the_unchanged_file_reads_like_safetensors(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(ORIGINAL)
    checkpoint = _Checkpoint(tmp_path, "")
    assert all(torch.equal(checkpoint.read(key), tensor) for key, tensor in TENSORS.items())
