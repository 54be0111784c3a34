"""Round-trip error, storage per parameter and the serialised state of NF4."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from peftlab.quant import BLOCK_SIZES, NF4State, dequantize_nf4, nf4_bytes_per_param, quantize_nf4
from peftlab.quant.codebook import NF4_CODE

# Error of quantize -> dequantize on standard-normal weights, (mean |err|, RMS err) per block
# size, double quantization on. Measured on 1024x1024 weights with seeds 0 and 1 (max of the
# two; plain NF4 is at most 2e-4 lower):
#   32: 0.0679 0.0874   64: 0.0729 0.0920   128: 0.0769 0.0957   256: 0.0805 0.0988
#  512: 0.0839 0.1017 1024: 0.0869 0.1045  2048: 0.0901 0.1076  4096: 0.0933 0.1107
# The thresholds sit 3 % above; larger blocks err more because one outlier sets the scale.
ERROR_BOUNDS = {
    32: (0.0700, 0.0900), 64: (0.0751, 0.0948), 128: (0.0792, 0.0986), 256: (0.0829, 0.1018),
    512: (0.0864, 0.1048), 1024: (0.0895, 0.1076), 2048: (0.0928, 0.1108), 4096: (0.0961, 0.1140),
}


@pytest.fixture(scope="module")
def gaussian():
    return torch.randn(512, 1024, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_round_trip_error_per_block_size(gaussian, block_size):
    error = dequantize_nf4(quantize_nf4(gaussian, block_size)) - gaussian
    mean_bound, rms_bound = ERROR_BOUNDS[block_size]
    assert error.abs().mean() < mean_bound
    assert error.pow(2).mean().sqrt() < rms_bound


_MAX_HALF_GAP = max(b - a for a, b in zip(NF4_CODE, NF4_CODE[1:])) / 2


@settings(max_examples=30, deadline=None)
@given(numel=st.integers(1, 700), block_size=st.sampled_from([32, 64, 128]), scale=st.floats(1e-3, 1e3),
       seed=st.integers(0, 2**16))
def test_error_within_half_code_gap_per_block(numel, block_size, scale, seed):
    """Nearest rounding: |w - w_hat| <= (largest code gap / 2) * absmax, block by block."""
    weight = torch.randn(numel, generator=torch.Generator().manual_seed(seed)) * scale
    state = quantize_nf4(weight, block_size, double_quant=False)
    error = (dequantize_nf4(state) - weight).abs()
    bound = _MAX_HALF_GAP * state.absmax.repeat_interleave(block_size)[:numel] * (1 + 1e-6)
    assert torch.all(error <= bound)


@settings(max_examples=15, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_double_quant_scales_close_to_plain(rows, cols, seed):
    """The 8-bit nested absmax is within 1 % of the float32 absmax for realistic weights."""
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    plain = quantize_nf4(weight, 32, double_quant=False)
    nested = quantize_nf4(weight, 32, double_quant=True)
    assert torch.equal(plain.packed, nested.packed)
    recovered = dequantize_nf4(nested) - dequantize_nf4(plain)
    assert recovered.abs().max() <= 0.01 * plain.absmax.max() + 1e-6


REAL_SHAPES = {
    "square 4096": (4096, 4096),
    "LLaMA-7B mlp": (11008, 4096),
    "SmolLM2-135M mlp": (1536, 576),
    "GPT-2 c_fc": (768, 3072),
}


@pytest.mark.parametrize("name", REAL_SHAPES)
def test_analytic_bytes_per_param_at_most_052(name):
    per_param = nf4_bytes_per_param(math.prod(REAL_SHAPES[name]), 64, double_quant=True)
    assert per_param <= 0.52
    assert per_param * 8 == pytest.approx(4.127, abs=0.001)


def test_measured_storage_matches_analytic():
    """Quantize a real-size layer and count the stored bytes."""
    weight = torch.randn(1536, 576)
    for double_quant in (True, False):
        state = quantize_nf4(weight, 64, double_quant)
        assert state.nbytes() / weight.numel() == pytest.approx(nf4_bytes_per_param(weight.numel(), 64, double_quant))
    assert quantize_nf4(weight, 64, True).nbytes() / weight.numel() <= 0.52
    assert nf4_bytes_per_param(weight.numel(), 64, double_quant=False) == pytest.approx(0.5625)


@pytest.mark.parametrize("double_quant", [True, False])
def test_state_round_trips_through_safetensors(tmp_path, double_quant):
    weight = torch.randn(37, 129)  # odd numel, partial last block
    state = quantize_nf4(weight.bfloat16(), 128, double_quant)
    path = tmp_path / "nf4.safetensors"
    save_file(state.as_tensors(), path, metadata=state.metadata())
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    loaded = NF4State.from_tensors(load_file(path), metadata)
    assert (loaded.shape, loaded.block_size, loaded.dtype) == ((37, 129), 128, torch.bfloat16)
    assert loaded.double_quant == double_quant
    assert torch.equal(dequantize_nf4(loaded), dequantize_nf4(state))


def test_from_tensors_rejects_missing_or_wrong_tensors():
    state = quantize_nf4(torch.randn(8, 64), 32, double_quant=True)
    tensors = state.as_tensors()
    del tensors["nested_absmax"]
    with pytest.raises(ValueError, match="nested_absmax"):
        NF4State.from_tensors(tensors, state.metadata())
    tensors = state.as_tensors()
    tensors["packed"] = tensors["packed"][:-1]
    with pytest.raises(ValueError, match=r"packed .* must be \(256,\)"):
        NF4State.from_tensors(tensors, state.metadata())
    with pytest.raises(ValueError, match="no 'nf4' entry"):
        NF4State.from_tensors(state.as_tensors(), {})


@pytest.mark.parametrize("bad", [16, 48, 8192, 100])
def test_bad_block_size_names_value_and_range(bad):
    with pytest.raises(ValueError, match=rf"block_size={bad}.*32 to 4096"):
        quantize_nf4(torch.randn(4, 64), bad)


def test_zero_block_and_odd_length():
    weight = torch.zeros(65)
    weight[64] = 3.0
    assert torch.equal(dequantize_nf4(quantize_nf4(weight, 32)), weight)


def test_state_to_device_keeps_values():
    state = quantize_nf4(torch.randn(16, 64), 32)
    moved = state.to("cpu")
    assert moved.device == torch.device("cpu")
    assert torch.equal(dequantize_nf4(moved), dequantize_nf4(state))
