"""The stored NF4 constants against their generator and the published table."""

import torch

from peftlab.quant.codebook import NF4_CODE, NF4_ZERO_INDEX, dynamic_map, midpoints, nf4_code_from_quantiles

# Table 1 of the QLoRA appendix / bitsandbytes' NF4 map, as published (float32 literals).
PUBLISHED_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]


def test_generator_matches_published_table():
    generated = nf4_code_from_quantiles().double()
    assert torch.allclose(generated, torch.tensor(PUBLISHED_NF4, dtype=torch.float64), rtol=0, atol=1e-7)


def test_stored_constants_are_the_generator_output():
    assert torch.equal(torch.tensor(NF4_CODE), nf4_code_from_quantiles())


def test_nf4_shape_asymmetric_with_exact_zero():
    code = torch.tensor(NF4_CODE)
    assert code[NF4_ZERO_INDEX] == 0.0
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7
    assert code[0] == -1.0 and code[-1] == 1.0
    assert torch.all(code[1:] > code[:-1])


def test_dynamic_map_layout():
    code = dynamic_map()
    assert code.shape == (256,) and code.dtype == torch.float32
    assert torch.all(code[1:] > code[:-1]), "sorted, no duplicates"
    assert code[127] == 0.0 and code[-1] == 1.0 and -1.0 < code[0] < -0.99
    # the finest step sits near zero: 10**-6 scale at exponent 0
    assert torch.isclose(code[128], torch.tensor(0.55e-6), rtol=1e-6, atol=0)


def test_midpoints_lie_between_neighbours():
    code = torch.tensor(NF4_CODE)
    mids = midpoints(code)
    assert torch.all((code[:-1] < mids) & (mids < code[1:]))
