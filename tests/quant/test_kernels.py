"""The NF4 kernels: compiled and eager agree bit for bit; the choice between them is detected, not assumed."""

import threading
import warnings

import pytest
import torch

from peftlab.quant import Linear4bit, dequantize_nf4, quantize_nf4
from peftlab.quant import kernels


def _state(shape, double_quant=True, block_size=64, seed=0):
    torch.manual_seed(seed)
    return quantize_nf4(torch.randn(*shape), block_size, double_quant)


def _eager_values(state):
    """The reference: every element through the eager gather."""
    values = torch.empty(state.numel)
    scales = kernels.block_scales(state.absmax, state.nested_absmax, state.nested_offset)
    kernels._dequantize_eager(values, state.packed, scales, state.block_size, 0, state.numel)
    return values


@pytest.mark.parametrize("shape,double_quant,block_size", [
    ((640, 64), True, 64),     # 640 blocks: nested blocks of 256, 256 and 128
    ((333, 520), True, 64),    # a partial last block (173,160 values)
    ((77, 33), False, 32),     # odd count, plain float32 scales
    ((96, 1024), True, 128),
])
def test_compiled_dequantization_equals_the_eager_gather(shape, double_quant, block_size):
    state = _state(shape, double_quant, block_size)
    assert torch.equal(dequantize_nf4(state).view(-1), _eager_values(state))


def test_ranges_starting_on_a_nested_block_equal_the_whole():
    state = _state((700, 64))  # 700 blocks
    whole = _eager_values(state)
    alignment = kernels.range_alignment(64, double_quant=True)
    assert alignment == 64 * 256
    for start, stop in ((0, alignment), (alignment, 2 * alignment + 100), (2 * alignment, state.numel)):
        out = torch.empty(stop - start)
        kernels.dequantize_into(out, state.packed, state.absmax, state.nested_absmax, state.nested_offset, 64,
                                start, stop)
        assert torch.equal(out, whole[start:stop])


def test_bfloat16_output_is_the_float32_value_rounded():
    state = _state((64, 256))
    out = torch.empty(state.numel, dtype=torch.bfloat16)
    kernels.dequantize_into(out, state.packed, state.absmax, state.nested_absmax, state.nested_offset, 64,
                            0, state.numel)
    assert torch.equal(out, _eager_values(state).to(torch.bfloat16))


def test_matvec_equals_the_dequantized_matmul():
    state = _state((96, 256))
    x = torch.randn(2, 256)
    product = kernels.nf4_matvec(x, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                                 state.shape, 64)
    reference = x @ _eager_values(state).view(96, 256).t()
    assert product is not None, "this machine compiles (a C++ compiler is installed), so the kernel must run"
    assert torch.allclose(product, reference, rtol=0, atol=1e-5)


def test_eager_mode_skips_compilation(monkeypatch):
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "eager")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled although PEFTLAB_NF4_KERNELS=eager"))
    state = _state((48, 128))
    x = torch.randn(1, 128)
    assert kernels.nf4_matvec(x, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                              state.shape, 64) is None
    layer = Linear4bit(state)
    assert torch.allclose(layer(x), x @ _eager_values(state).view(48, 128).t(), rtol=0, atol=1e-5)


def test_a_failing_compiler_warns_once_and_falls_back(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no C++ compiler\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setattr(kernels, "_verdicts", {})
    state = _state((40, 128))
    with pytest.warns(RuntimeWarning, match=r"compiled dequantize_blocks kernel is not usable.*no C\+\+ compiler"):
        values = dequantize_nf4(state)
    assert torch.equal(values.view(-1), _eager_values(state))
    assert kernels._verdicts == {("dequantize", "cpu", torch.float32, True): False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dequantize_nf4(state)  # decided: no second attempt, no second warning
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "compiled")
    monkeypatch.setattr(kernels, "_verdicts", {})
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        dequantize_nf4(state)


def test_a_disagreeing_kernel_is_not_used(monkeypatch):
    def wrong(function, **kwargs):
        def run(*args):
            out = function(*args)
            return out.add_(1.0)
        return run

    monkeypatch.setattr(torch, "compile", wrong)
    monkeypatch.setattr(kernels, "_compiled", {})
    monkeypatch.setattr(kernels, "_verdicts", {})
    state = _state((40, 128), double_quant=False)
    with pytest.warns(RuntimeWarning, match="differs from the eager"):
        values = dequantize_nf4(state)
    assert torch.equal(values.view(-1), _eager_values(state))


def test_unknown_kernel_mode_is_refused(monkeypatch):
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"PEFTLAB_NF4_KERNELS='fast'.*auto, compiled, eager"):
        dequantize_nf4(_state((8, 64)))


def test_cpu_workspace_is_reused_per_thread_and_fresh_elsewhere():
    first = kernels.workspace(1000, torch.float32, torch.device("cpu"))
    again = kernels.workspace(500, torch.float32, torch.device("cpu"))
    assert again.data_ptr() == first.data_ptr()
    grown = kernels.workspace(5000, torch.float32, torch.device("cpu"))
    assert grown.numel() == 5000
    other = []
    thread = threading.Thread(target=lambda: other.append(kernels.workspace(500, torch.float32, torch.device("cpu"))))
    thread.start()
    thread.join()
    assert other[0].data_ptr() != grown.data_ptr()
    # An accelerator's caching allocator makes a fresh tensor free: nothing is kept there.
    meta = kernels.workspace(500, torch.float32, torch.device("meta"))
    assert meta.device.type == "meta" and meta.numel() == 500
