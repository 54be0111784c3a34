"""Bit-exact agreement with bitsandbytes on the same weights (bitsandbytes is an oracle only).

bitsandbytes 0.50 on CPU quantizes 4-bit codes with its reference PyTorch kernel and the 8-bit
nested absmax codes with a C++ kernel whose approximate search (BinSearch ``Direct2``) picks a
non-nearest code for about 0.1 % of values. peftlab rounds to nearest, which is what the
bitsandbytes reference PyTorch backend computes; so nested codes are compared bit for bit with
that backend (reached through its dispatch key), and with the C++ kernel up to those few
values, where peftlab's code is never farther from the value than the C++ kernel's.
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


def _bnb_reference_blockwise(values: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bitsandbytes' pure-PyTorch ``quantize_blockwise`` kernel, bypassing the C++ CPU one."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    return torch.ops.bitsandbytes.quantize_blockwise.default.redispatch(keys, values, dynamic_map(), blocksize)


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

    centred = quantize_nf4(weight, block_size, double_quant=False).absmax - bnb_state.offset
    reference_codes, _ = _bnb_reference_blockwise(centred, 256)
    assert torch.equal(state.absmax, reference_codes)

    # Against the C++ kernel: the same codes except where its search is not nearest.
    differs = state.absmax != bnb_state.absmax
    assert differs.sum() <= max(1, 0.005 * differs.numel())
    code, scale = dynamic_map(), state.nested_absmax.repeat_interleave(256)[: centred.numel()]
    normed = centred / scale.clamp(min=1e-38)  # an all-zero nested block has scale 0
    ours = (normed - code[state.absmax.long()]).abs()
    theirs = (normed - code[bnb_state.absmax.long()]).abs()
    assert torch.all(ours[differs] <= theirs[differs])

    # Dequantization equals bitsandbytes' given the same (nearest) nested codes.
    bnb_state.absmax = state.absmax.clone()
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert torch.allclose(dequantize_nf4(state), expected.view(shape), rtol=0, atol=1e-6)
    assert torch.equal(absmax_float32(state), bnb_functional.dequantize_blockwise(state.absmax, bnb_state.state2)
                       + bnb_state.offset)


def test_bfloat16_weights_and_output():
    weight = _weight((64, 128)).bfloat16()
    packed, bnb_state = bnb_functional.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    state = quantize_nf4(weight, 64, double_quant=False)
    assert torch.equal(state.packed, packed.view(-1))
    expected = bnb_functional.dequantize_4bit(packed, bnb_state, quant_type="nf4")
    assert expected.dtype == torch.bfloat16
    assert torch.equal(dequantize_nf4(state, torch.bfloat16), expected)
