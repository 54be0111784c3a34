"""Bit-exact agreement with bitsandbytes on the same weights (bitsandbytes is an oracle only).

bitsandbytes 0.50 on CPU quantizes 4-bit codes to the nearest NF4 value and the 8-bit nested
absmax codes through a 65,536-point rounding grid; peftlab does the same, so packed codes, the
absmax constants at both levels, the offset and the dequantized weights are all compared exactly
against what `bitsandbytes.functional.quantize_4bit` itself returns.
"""

import pytest
import torch

bnb_functional = pytest.importorskip(
    "bitsandbytes.functional",
    reason="bitsandbytes is not installed: it is the NF4 test oracle (pip install bitsandbytes)",
)

from peftlab.quant import absmax_float32, dequantize_nf4, quantize_nf4  # noqa: E402
from peftlab.quant.codebook import dynamic_map  # noqa: E402

# Sizes that are not a multiple of the block; (33, 65) also has an odd number of values (half a
# byte of padding). Only one odd last dimension: bitsandbytes compiles a fallback kernel for each.
CASES = [((256, 512), 64), ((300, 78), 64), ((33, 65), 32), ((129, 1000), 128), ((1024, 1024), 4096), ((10,), 32)]


def _weight(shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_dynamic_map_is_bitsandbytes_map():
    assert torch.equal(dynamic_map(), bnb_functional.create_dynamic_map())


@pytest.mark.parametrize("shape,block_size", CASES)
def test_plain_nf4_bit_exact(shape, block_size):
    weight = _weight(shape)
    packed, bnb_state = bnb_functional.quantize_4bit(weight, blocksize=block_size, quant_type="nf4")
    state = quantize_nf4(weight, block_size, double_quant=False)
    assert torch.equal(state.packed, packed.view(-1))
    assert torch.equal(state.absmax, bnb_state.absmax)
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert torch.allclose(dequantize_nf4(state), expected.view(shape), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,block_size", CASES)
def test_double_quant_bit_exact(shape, block_size):
    weight = _weight(shape)
    packed, bnb_state = bnb_functional.quantize_4bit(weight, blocksize=block_size, quant_type="nf4",
                                                     compress_statistics=True)
    state = quantize_nf4(weight, block_size, double_quant=True)
    assert torch.equal(state.packed, packed.view(-1))
    assert torch.equal(state.nested_offset, bnb_state.offset)
    assert state.nested_absmax.dtype == torch.float32
    assert torch.equal(state.nested_absmax, bnb_state.state2.absmax)

    assert torch.equal(state.absmax, bnb_state.absmax)  # the 8-bit nested codes
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert torch.allclose(dequantize_nf4(state), expected.view(shape), rtol=0, atol=1e-6)
    assert torch.equal(absmax_float32(state), bnb_functional.dequantize_blockwise(state.absmax, bnb_state.state2)
                       + bnb_state.offset)


def test_double_quant_bit_exact_on_a_real_size_layer():
    weight = 0.02 * _weight((4096, 4096))
    packed, bnb_state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4", compress_statistics=True)
    state = quantize_nf4(weight, 64, double_quant=True)
    assert torch.equal(state.packed, packed.view(-1))
    assert torch.equal(state.absmax, bnb_state.absmax)
    assert torch.equal(state.nested_absmax, bnb_state.state2.absmax)
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert torch.allclose(dequantize_nf4(state), expected, rtol=0, atol=1e-6)


def test_nested_rounding_is_at_most_one_code_from_nearest():
    """The grid rounding of the 8-bit level stays within one code of exact nearest rounding."""
    centred = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    state = quantize_nf4(centred.abs().view(64, 64) + 0.01, 64, double_quant=True)
    scale = state.nested_absmax.repeat_interleave(256)[: state.absmax.numel()]
    plain = quantize_nf4(centred.abs().view(64, 64) + 0.01, 64, double_quant=False).absmax
    normed = (plain - state.nested_offset) / scale
    exact = (normed.unsqueeze(1) - dynamic_map()).abs().argmin(1)
    assert (state.absmax.long() - exact).abs().max() <= 1


def test_bfloat16_weights_and_output():
    weight = _weight((64, 128)).bfloat16()
    packed, bnb_state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    state = quantize_nf4(weight, 64, double_quant=False)
    assert torch.equal(state.packed, packed.view(-1))
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert expected.dtype == torch.bfloat16
    assert torch.equal(dequantize_nf4(state, torch.bfloat16), expected)
