"""Linear4bit: same outputs and input gradients as F.linear on its dequantized weight."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import Conv1D

from peftlab.quant import Linear4bit, NF4State, dequantize_nf4, quantize_nf4


def _linear(in_features, out_features, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(in_features, out_features, bias=bias)


@pytest.mark.parametrize("in_features,out_features,block_size,bias",
                         [(64, 48, 64, True), (520, 333, 64, False), (769, 130, 256, True)])
def test_forward_and_input_grad_match_dense(in_features, out_features, block_size, bias):
    layer = Linear4bit.from_linear(_linear(in_features, out_features, bias), block_size=block_size)
    weight = layer.dequantized_weight()
    assert weight.shape == (out_features, in_features)
    x = torch.randn(3, 5, in_features, requires_grad=True)
    y = layer(x)
    reference = F.linear(x, weight, layer.bias)
    assert y.shape == (3, 5, out_features)
    assert torch.allclose(y, reference, rtol=0, atol=1e-5 * weight.abs().max().item() * in_features**0.5)
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, upstream)
    (grad_reference,) = torch.autograd.grad(reference, x, upstream)
    assert torch.allclose(grad, grad_reference, rtol=0, atol=1e-6)


def test_one_token_forward_within_1e6():
    layer = Linear4bit.from_linear(_linear(256, 128))
    x = torch.randn(1, 256)
    assert torch.allclose(layer(x), F.linear(x, layer.dequantized_weight(), layer.bias), rtol=0, atol=1e-6)


@pytest.mark.parametrize("double_quant,out_features", [(True, 300), (False, 20)])
def test_slabs_tile_large_weights(monkeypatch, double_quant, out_features):
    """Many row slabs give the same result as one. With double quantization a slab starts on a
    nested block (256 blocks of 64 = 128 rows of 128 here): slabs of 128, 128 and 44 rows."""
    import peftlab.quant.linear4bit as module

    layer = Linear4bit.from_weight(_linear(128, out_features).weight, double_quant=double_quant)
    x = torch.randn(4, 128, requires_grad=True)
    whole = layer(x)
    monkeypatch.setattr(module, "_SLAB_ELEMENTS", 256)
    assert module._slab_rows(layer.quant_state) == (128 if double_quant else 2)
    sliced = layer(x)
    assert torch.allclose(whole, sliced, rtol=0, atol=1e-6)
    (grad,) = torch.autograd.grad(sliced.sum(), x)
    assert torch.allclose(grad, layer.dequantized_weight().sum(0).expand(4, -1), rtol=0, atol=1e-5)


def test_backward_saves_no_full_weight():
    """No float (out, in) weight is saved for backward: it is recomputed from the NF4 state."""
    layer = Linear4bit.from_linear(_linear(512, 256))
    x = torch.randn(2, 512, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        layer(x).sum().backward()
    assert (256, 512) not in saved and (512, 256) not in saved


def test_bias_gradient_when_trainable():
    layer = Linear4bit.from_linear(_linear(64, 32))
    layer.bias.requires_grad_(True)
    layer(torch.randn(6, 64)).sum().backward()
    assert torch.allclose(layer.bias.grad, torch.full((32,), 6.0))


def test_bfloat16_compute():
    layer = Linear4bit.from_linear(_linear(256, 64), compute_dtype=torch.bfloat16)
    x = torch.randn(4, 256, requires_grad=True)
    y = layer(x)
    assert y.dtype == torch.float32
    reference = F.linear(x, layer.dequantized_weight(), layer.bias)
    assert torch.allclose(y, reference, rtol=0.05, atol=0.05)
    y.sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_from_gpt2_conv1d_uses_linear_layout():
    torch.manual_seed(0)
    conv = Conv1D(nf=48, nx=64)  # weight (in=64, out=48)
    torch.nn.init.normal_(conv.weight)
    layer = Linear4bit.from_linear(conv)
    assert (layer.in_features, layer.out_features) == (64, 48)
    expected = dequantize_nf4(quantize_nf4(conv.weight.t()))
    assert torch.equal(layer.dequantized_weight(), expected)
    x = torch.randn(2, 64)
    assert torch.allclose(layer(x), conv(x), rtol=0, atol=0.2 * conv.weight.abs().max().item() * 8)


def test_only_bias_is_a_parameter_and_frozen():
    layer = Linear4bit.from_linear(_linear(64, 32))
    assert [name for name, _ in layer.named_parameters()] == ["bias"]
    assert not layer.bias.requires_grad
    assert {name for name, _ in layer.named_buffers()} == {"packed", "absmax", "nested_absmax", "nested_offset"}
    assert layer.packed.dtype == torch.uint8 and layer.packed.numel() == 64 * 32 // 2
    layer = layer.to("cpu")
    assert layer.quant_state.device == torch.device("cpu")


def test_state_dict_round_trips_through_safetensors(tmp_path):
    layer = Linear4bit.from_linear(_linear(96, 40), block_size=32)
    state = layer.quant_state
    save_file(state.as_tensors(), tmp_path / "w.safetensors", metadata=state.metadata())
    loaded_state = NF4State.from_tensors(load_file(tmp_path / "w.safetensors"), state.metadata())
    rebuilt = Linear4bit(loaded_state, layer.bias)
    x = torch.randn(3, 96)
    assert torch.equal(rebuilt(x), layer(x))
    twin = Linear4bit.from_linear(_linear(96, 40, seed=1), block_size=32)
    twin.load_state_dict(layer.state_dict())
    assert torch.equal(twin(x), layer(x))


def test_errors_are_actionable():
    with pytest.raises(ValueError, match=r"block_size=100.*32 to 4096"):
        Linear4bit.from_linear(_linear(64, 8), block_size=100)
    with pytest.raises(ValueError, match="compute_dtype"):
        Linear4bit.from_linear(_linear(64, 8), compute_dtype=torch.float16)
    with pytest.raises(TypeError, match="nn.Linear or transformers Conv1D"):
        Linear4bit.from_linear(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="64 features"):
        Linear4bit.from_linear(_linear(64, 8))(torch.randn(2, 63))


def test_extra_repr_describes_storage():
    text = repr(Linear4bit.from_linear(_linear(64, 8)))
    assert "in_features=64" in text and "block_size=64" in text and "double_quant" in text


def test_dtype_casts_leave_the_quantized_state_alone():
    layer = Linear4bit.from_linear(_linear(64, 16), double_quant=False)  # float32 absmax buffer
    weight = layer.dequantized_weight()
    layer.to(torch.bfloat16)
    assert layer.absmax.dtype == torch.float32 and layer.bias.dtype == torch.bfloat16
    assert torch.equal(layer.dequantized_weight(), weight)
    assert layer(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16
