"""The NF4 kernels: native and eager agree bit for bit; the native one is detected, built and checked, not assumed."""

import ctypes
import os
import shutil
import threading
import warnings

import pytest
import torch

from peftlab.quant import Linear4bit, dequantize_nf4, kernels, native, quantize_nf4

HAS_COMPILER = shutil.which(os.environ.get("CC", "cc")) is not None


def _state(shape, double_quant=True, block_size=64, seed=0):
    torch.manual_seed(seed)
    return quantize_nf4(torch.randn(*shape), block_size, double_quant)


def _eager_values(state):
    """The reference: every element through the eager gather."""
    values = torch.empty(state.numel)
    scales = kernels.block_scales(state.absmax, state.nested_absmax, state.nested_offset)
    kernels._dequantize_eager(values, state.packed, scales, state.block_size, 0, state.numel)
    return values


@pytest.fixture
def fresh_verdicts(monkeypatch):
    """Each test decides the native kernels' fate anew (and leaves the suite's verdicts alone)."""
    monkeypatch.setattr(kernels, "_verdicts", {})


@pytest.mark.parametrize("shape,double_quant,block_size", [
    ((640, 64), True, 64),     # 640 blocks: nested blocks of 256, 256 and 128
    ((333, 520), True, 64),    # a partial last block (173,160 values)
    ((77, 33), False, 32),     # odd count, plain float32 scales
    ((96, 1024), True, 128),
    ((8, 8192), True, 4096),   # the largest block
])
def test_native_dequantization_equals_the_eager_gather(shape, double_quant, block_size, fresh_verdicts):
    state = _state(shape, double_quant, block_size)
    if HAS_COMPILER:
        assert torch.equal(dequantize_nf4(state).view(-1), _eager_values(state))
        assert kernels._verdicts == {("dequantize", torch.float32, double_quant): True}
    else:  # detected, not assumed: the eager kernels, with a warning naming why
        with pytest.warns(RuntimeWarning, match="no C compiler"):
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


@pytest.mark.parametrize("double_quant", [True, False])
def test_bfloat16_output_is_the_float32_value_rounded(double_quant):
    state = _state((64, 256), double_quant)
    out = torch.empty(state.numel, dtype=torch.bfloat16)
    kernels.dequantize_into(out, state.packed, state.absmax, state.nested_absmax, state.nested_offset, 64,
                            0, state.numel)
    assert torch.equal(out, _eager_values(state).to(torch.bfloat16))


@pytest.mark.skipif(not HAS_COMPILER, reason="the native matvec needs a C compiler; without one it returns None")
@pytest.mark.parametrize("rows", [1, 3, kernels.MATVEC_MAX_ROWS])
def test_native_matvec_equals_the_dequantized_matmul(rows):
    state = _state((96, 256))
    x = torch.randn(rows, 256)
    product = kernels.nf4_matvec(x, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                                 state.shape, 64)
    weight = _eager_values(state).view(96, 256)
    reference = x @ weight.t()
    # Summed in another order (each block's dot product, then scaled once): float32 rounding of
    # the terms' magnitudes bounds the difference.
    assert ((product - reference).abs() <= 1e-6 * (x.abs() @ weight.abs().t())).all()


def test_eager_mode_never_builds(monkeypatch, fresh_verdicts):
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "eager")
    monkeypatch.setattr(native, "load", lambda: pytest.fail("built although PEFTLAB_NF4_KERNELS=eager"))
    state = _state((48, 128))
    x = torch.randn(1, 128)
    assert kernels.nf4_matvec(x, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                              state.shape, 64) is None
    assert torch.allclose(Linear4bit(state)(x), x @ _eager_values(state).view(48, 128).t(), rtol=0, atol=1e-5)


def test_missing_or_failing_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path))
    try:
        monkeypatch.setenv("CC", "no-such-compiler-x")
        native.load.cache_clear()
        with pytest.raises(RuntimeError, match="no C compiler: 'no-such-compiler-x' is not on PATH"):
            native.load()
        monkeypatch.setenv("CC", "false")  # exists, fails every build
        native.load.cache_clear()
        with pytest.raises(RuntimeError, match="the C compiler failed: -O3 -march=native -fopenmp: exit status 1"):
            native.load()
        assert not list(tmp_path.rglob("*.so"))
    finally:
        native.load.cache_clear()


@pytest.mark.skipif(not HAS_COMPILER, reason="builds the library")
def test_the_library_is_built_once_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path))
    try:
        native.load.cache_clear()
        native.load()
        (built,) = tmp_path.rglob("nf4-*.so")
        stamp = built.stat().st_mtime_ns
        native.load.cache_clear()
        native.load()
        assert [p.stat().st_mtime_ns for p in tmp_path.rglob("nf4-*.so")] == [stamp]
    finally:
        native.load.cache_clear()


def test_a_failing_build_warns_once_and_falls_back(monkeypatch, fresh_verdicts):
    def broken():
        raise RuntimeError("no C compiler: 'cc' is not on PATH (set CC)")

    monkeypatch.setattr(native, "load", broken)
    state = _state((40, 128))
    with pytest.warns(RuntimeWarning, match=r"native dequantize kernel is not used.*no C compiler"):
        values = dequantize_nf4(state)
    assert torch.equal(values.view(-1), _eager_values(state))
    assert kernels._verdicts == {("dequantize", torch.float32, True): False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dequantize_nf4(state)  # decided: no second attempt, no second warning
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "native")
    monkeypatch.setattr(kernels, "_verdicts", {})
    with pytest.raises(RuntimeError, match="no C compiler"):
        dequantize_nf4(state)


@pytest.mark.skipif(not HAS_COMPILER, reason="corrupts the native library's output")
def test_a_disagreeing_native_kernel_is_not_used(monkeypatch, fresh_verdicts):
    real = native.load()

    class Corrupting:
        single_thread = True
        matvec = real.matvec

        @staticmethod
        def dequantize(*args):
            real.dequantize(*args)
            ctypes.c_float.from_address(args[9]).value += 1.0  # args[9]: the output pointer

    monkeypatch.setattr(native, "load", lambda: Corrupting)
    state = _state((40, 128), double_quant=False)
    with pytest.warns(RuntimeWarning, match="differs from the eager kernel"):
        values = dequantize_nf4(state)
    assert torch.equal(values.view(-1), _eager_values(state))


def test_unknown_kernel_mode_is_refused(monkeypatch):
    monkeypatch.setenv("PEFTLAB_NF4_KERNELS", "fast")
    with pytest.raises(ValueError, match=r"PEFTLAB_NF4_KERNELS='fast'.*auto, native, eager"):
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
