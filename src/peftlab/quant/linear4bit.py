"""A frozen linear layer stored in NF4: the base layer QLoRA trains adapters on top of.

    y = x @ dequant(W)^T + b          x: (..., in)   W: (out, in) stored as NF4   y: (..., out)

Only the packed codes and the scales live in the module (as buffers: they move with ``.to()``,
are saved in ``state_dict()`` and are never handed to an optimizer); the bias stays float.
The forward pass dequantizes the weight a slab of rows at a time and multiplies each slab while
it is still in cache, so neither a full-size float weight nor a second copy of it ever exists.
The backward pass (gradient w.r.t. the input only — the weight is frozen) dequantizes again
instead of saving the float weight for later: that recomputation is where QLoRA saves memory.

                  packed (out*in/2,) uint8 ──┐
    x (..., in) ──► for each row slab:   dequant (rows, in) ──► x @ slab^T ──► y[:, rows]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftlab.quant.codebook import DEFAULT_BLOCK_SIZE, NESTED_BLOCK_SIZE
from peftlab.quant.nf4 import (
    NF4State, absmax_float32, byte_pair_table, dequantize_nf4, dequantize_range, quantize_nf4,
)

# About 1 Mi float32 values (4 MiB) per thread per slab: each thread's share stays in its cache
# between the dequantization and the matmul, yet the matmul keeps its full speed. Measured on a
# 4096x4096 layer: 1 thread, 256 tokens, slabs of 2**20 values run in 0.68x the time of one
# whole-weight slab. Larger slabs mean fewer parallel regions, which matters on a loaded machine.
_SLAB_ELEMENTS = 1 << 20
# On an accelerator each slab is a few kernel launches: bigger slabs, still far below a full weight
# of a large model.
_ACCELERATOR_SLAB_ELEMENTS = 1 << 24
_COMPUTE_DTYPES = (torch.float32, torch.bfloat16)
_STATE_BUFFERS = ("packed", "absmax", "nested_absmax", "nested_offset")


def _slab_rows(in_features: int, block_size: int, device: torch.device) -> int:
    """Rows per slab: a multiple of the rows after which a slab starts on a block boundary."""
    step = block_size // math.gcd(in_features, block_size)
    elements = _SLAB_ELEMENTS * torch.get_num_threads() if device.type == "cpu" else _ACCELERATOR_SLAB_ELEMENTS
    return max(step, elements // in_features // step * step)


def _slabs(state: NF4State, compute_dtype: torch.dtype):
    """Yield (row_start, row_stop, weight slab (rows, in) in compute_dtype) over the weight."""
    out_features, in_features = state.shape
    absmax = absmax_float32(state)
    table = byte_pair_table(state.device)
    step = _slab_rows(in_features, state.block_size, state.device)
    for r0 in range(0, out_features, step):
        r1 = min(r0 + step, out_features)
        start, stop = r0 * in_features, r1 * in_features
        slab = dequantize_range(state.packed, absmax, state.block_size, start, stop, table)
        yield r0, r1, slab.view(r1 - r0, in_features).to(compute_dtype)


def _is_conv1d(layer: nn.Module) -> bool:
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")  # transformers.pytorch_utils.Conv1D


class _NF4LinearFunction(torch.autograd.Function):
    """y = x W^T (+ b) with W recomputed from NF4 in backward rather than saved."""

    @staticmethod
    def forward(ctx, x2d: torch.Tensor, bias: torch.Tensor | None, state: NF4State):  # x2d: (M, in)
        out = torch.empty(x2d.shape[0], state.shape[0], dtype=x2d.dtype, device=x2d.device)  # (M, out)
        for r0, r1, slab in _slabs(state, x2d.dtype):
            torch.mm(x2d, slab.t(), out=out[:, r0:r1])  # straight into the output's column block
        if bias is not None:
            out += bias
        ctx.state = state
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # grad_out: (M, out)
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_out.new_zeros(grad_out.shape[0], ctx.state.shape[1])  # (M, in)
            for r0, r1, slab in _slabs(ctx.state, grad_out.dtype):
                grad_x.addmm_(grad_out[:, r0:r1], slab)  # (M, rows) @ (rows, in)
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_bias, None


class Linear4bit(nn.Module):
    """``nn.Linear`` with an NF4 weight; built with ``from_linear``, ``from_weight`` or a state.

    ``compute_dtype`` (float32 or bfloat16) is the precision of the matmul; the input is cast to
    it and the output cast back to the input's dtype. ``from_conv1d`` remembers that the layer
    was a GPT-2 ``Conv1D`` (weight stored (in, out)), so ``to_float_layer`` gives one back.
    """

    # Adapter code (`peftlab.core.targets.is_linear`) treats any module declaring this as a linear.
    is_quantized_linear = True

    def __init__(self, state: NF4State, bias: torch.Tensor | None = None, *,
                 compute_dtype: torch.dtype = torch.float32, from_conv1d: bool = False):
        super().__init__()
        if len(state.shape) != 2:
            raise ValueError(f"Linear4bit needs a 2-D (out, in) weight state, got shape {state.shape}")
        if compute_dtype not in _COMPUTE_DTYPES:
            raise ValueError(f"compute_dtype={compute_dtype} is not supported: use one of {_COMPUTE_DTYPES}")
        self.out_features, self.in_features = state.shape
        self.block_size = state.block_size
        self.weight_dtype = state.dtype
        self.compute_dtype = compute_dtype
        self.from_conv1d = from_conv1d
        for name in _STATE_BUFFERS:
            self.register_buffer(name, getattr(state, name))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                    block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.float32, from_conv1d: bool = False) -> Linear4bit:
        """Quantize a weight in nn.Linear layout, (out, in)."""
        return cls(quantize_nf4(weight, block_size, double_quant), bias, compute_dtype=compute_dtype,
                   from_conv1d=from_conv1d)

    @classmethod
    def from_linear(cls, layer: nn.Module, *, block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True,
                    compute_dtype: torch.dtype = torch.float32) -> Linear4bit:
        """Quantize an ``nn.Linear`` or a GPT-2 ``Conv1D`` (whose weight is stored (in, out))."""
        conv1d = _is_conv1d(layer)
        if not (conv1d or isinstance(layer, nn.Linear)):
            raise TypeError(
                f"Linear4bit.from_linear takes nn.Linear or transformers Conv1D, got {type(layer).__name__}")
        weight = layer.weight.t() if conv1d else layer.weight
        return cls.from_weight(weight, layer.bias, block_size=block_size, double_quant=double_quant,
                               compute_dtype=compute_dtype, from_conv1d=conv1d)

    def _apply(self, fn, recurse=True):
        """Let ``.to(device)`` move the quantization state but never cast it: ``model.half()`` or
        ``.to(torch.bfloat16)`` would otherwise round the float32 scales and corrupt the weight."""
        state = {name: self._buffers.pop(name) for name in _STATE_BUFFERS}
        super()._apply(fn, recurse)
        for name, tensor in state.items():
            moved = None if tensor is None else fn(tensor)
            self._buffers[name] = moved if moved is None or moved.dtype == tensor.dtype else tensor.to(moved.device)
        return self

    @property
    def quant_state(self) -> NF4State:
        """The current buffers as an ``NF4State`` (no copies; follows ``.to(device)``)."""
        return NF4State(self.packed, self.absmax, (self.out_features, self.in_features), self.block_size,
                        self.weight_dtype, self.nested_absmax, self.nested_offset)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A fresh float copy of the weight, (out, in) — for merging and tests, not for forward."""
        return dequantize_nf4(self.quant_state, dtype)

    def to_float_layer(self, weight: torch.Tensor | None = None) -> nn.Module:
        """A float ``nn.Linear`` (or ``Conv1D``, if quantized from one) in the original weight dtype.

        ``weight`` (out, in) defaults to the dequantized weight; the bias is the same Parameter
        object, so the float layer and this one never disagree about it.
        """
        weight = self.dequantized_weight(self.weight_dtype) if weight is None else weight.to(self.weight_dtype)
        if self.from_conv1d:
            from transformers.pytorch_utils import Conv1D  # the only transformers dependency here

            layer = Conv1D(self.out_features, self.in_features)
            layer.weight = nn.Parameter(weight.t().contiguous(), requires_grad=False)  # (in, out)
            layer.bias = self.bias
        else:
            layer = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
            layer.weight = nn.Parameter(weight, requires_grad=False)
            layer.bias = self.bias
        return layer.to(self.packed.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear4bit expects inputs with {self.in_features} features, got shape {tuple(x.shape)}")
        x2d = x.reshape(-1, self.in_features).to(self.compute_dtype)  # (M, in)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        out = _NF4LinearFunction.apply(x2d, bias, self.quant_state)  # (M, out)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        nested = f", double_quant (nested blocks of {NESTED_BLOCK_SIZE})" if self.nested_absmax is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 block_size={self.block_size}{nested}, compute_dtype={self.compute_dtype}")
