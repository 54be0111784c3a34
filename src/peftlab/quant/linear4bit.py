"""A frozen linear layer stored in NF4: the base layer QLoRA trains adapters on top of.

    y = x @ dequant(W)^T + b          x: (..., in)   W: (out, in) stored as NF4   y: (..., out)

Only the packed codes and the scales live in the module (as buffers: they move with ``.to()``,
are saved in ``state_dict()`` and are never handed to an optimizer); the bias stays float.
The forward pass dequantizes the weight into a scratch slab (``kernels.workspace``: reused on
CPU) of up to 2**24 values, so most layers are one dequantization and one matmul, and a larger
weight is never held in float at once; for a few input rows on CPU it skips the float weight
entirely (``kernels.nf4_matvec``). The backward pass (gradient w.r.t. the input only — the
weight is frozen) dequantizes again instead of saving the float weight for later: that
recomputation is where QLoRA saves memory.

                  packed (out*in/2,) uint8 ──┐
    x (..., in) ──► for each row slab:   dequant (rows, in) ──► x @ slab^T ──► y[:, rows]

``matmul`` / ``matmul_input_grad`` expose the same two products without autograd, for adapter
layers that make the whole layer one autograd node (``peftlab.methods.lora.fused``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peftlab.quant.codebook import DEFAULT_BLOCK_SIZE, NESTED_BLOCK_SIZE
from peftlab.quant.kernels import MATVEC_MAX_ROWS, dequantize_into, nf4_matvec, range_alignment, workspace
from peftlab.quant.nf4 import NF4State, dequantize_nf4, quantize_nf4

# Values per slab: up to 2**24 (a 4096 x 4096 weight; 64 MiB of float32 workspace on CPU) in one
# slab, so most layers are one dequantization and one matmul: the fewest parallel regions (see
# kernels.py). Larger weights are tiled, so no full float copy of them ever exists.
_SLAB_ELEMENTS = 1 << 24
# Up to this many input rows (tokens) the CPU forward runs the native dequantize-matvec kernel
# instead of dequantizing: it reads 4 bits per weight instead of writing and reading 32 (measured
# faster than dequantize + matmul for 1 to 8 rows on 4096 x 4096 and 1728 x 576 weights).
_MATVEC_MAX_ROWS = MATVEC_MAX_ROWS
_COMPUTE_DTYPES = (torch.float32, torch.bfloat16)
_STATE_BUFFERS = ("packed", "absmax", "nested_absmax", "nested_offset")


def _slab_rows(state: NF4State) -> int:
    """Rows per slab: a multiple of the rows after which a slab starts on a range boundary."""
    out_features, in_features = state.shape
    alignment = range_alignment(state.block_size, state.double_quant)
    step = alignment // math.gcd(in_features, alignment)
    return min(out_features, max(step, _SLAB_ELEMENTS // in_features // step * step))


def _slabs(state: NF4State, dtype: torch.dtype):
    """Yield (row_start, row_stop, weight slab (rows, in) in `dtype`), each valid until the next one."""
    out_features, in_features = state.shape
    step = _slab_rows(state)
    buffer = workspace(step * in_features, dtype, state.device)
    for r0 in range(0, out_features, step):
        r1 = min(r0 + step, out_features)
        slab = buffer[: (r1 - r0) * in_features]
        dequantize_into(slab, state.packed, state.absmax, state.nested_absmax, state.nested_offset,
                        state.block_size, r0 * in_features, r1 * in_features)
        yield r0, r1, slab.view(r1 - r0, in_features)


def nf4_linear(x2d: torch.Tensor, state: NF4State, bias: torch.Tensor | None) -> torch.Tensor:
    """x2d @ dequant(W)^T + bias, all in x2d's dtype (the compute dtype): (M, in) -> (M, out), a new tensor.

    One slab: one dequantization and one matmul. A few rows on CPU: the fused matvec kernel.
    """
    out_features, in_features = state.shape
    if (x2d.shape[0] <= _MATVEC_MAX_ROWS and x2d.device.type == "cpu" and x2d.dtype == torch.float32
            and in_features % state.block_size == 0):
        out = nf4_matvec(x2d, state.packed, state.absmax, state.nested_absmax, state.nested_offset, state.shape,
                         state.block_size)
        if out is not None:
            return out if bias is None else out.add_(bias)
    out = torch.empty(x2d.shape[0], out_features, dtype=x2d.dtype, device=x2d.device)  # (M, out)
    for r0, r1, slab in _slabs(state, x2d.dtype):
        if bias is None:
            torch.mm(x2d, slab.t(), out=out[:, r0:r1])  # straight into the output's column block
        else:
            torch.addmm(bias[r0:r1], x2d, slab.t(), out=out[:, r0:r1])
    return out


def nf4_linear_input_grad(grad_out: torch.Tensor, state: NF4State) -> torch.Tensor:
    """grad_out @ dequant(W): the gradient w.r.t. the input, (M, out) -> (M, in), a new tensor."""
    grad_x = torch.empty(grad_out.shape[0], state.shape[1], dtype=grad_out.dtype, device=grad_out.device)
    for r0, r1, slab in _slabs(state, grad_out.dtype):
        if r0 == 0:
            torch.mm(grad_out[:, r0:r1], slab, out=grad_x)  # (M, rows) @ (rows, in)
        else:
            grad_x.addmm_(grad_out[:, r0:r1], slab)
    return grad_x


def _is_conv1d(layer: nn.Module) -> bool:
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")  # transformers.pytorch_utils.Conv1D


class _NF4LinearFunction(torch.autograd.Function):
    """y = x W^T (+ b) with W recomputed from NF4 in backward rather than saved."""

    @staticmethod
    def forward(ctx, x2d: torch.Tensor, bias: torch.Tensor | None, state: NF4State):  # x2d: (M, in)
        ctx.state = state
        ctx.has_bias = bias is not None
        return nf4_linear(x2d, state, bias)  # (M, out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # grad_out: (M, out)
        grad_x = nf4_linear_input_grad(grad_out, ctx.state) if ctx.needs_input_grad[0] else None
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[1] else None
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
        self._check_features(x)
        x2d = x.reshape(-1, self.in_features).to(self.compute_dtype)  # (M, in)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        out = _NF4LinearFunction.apply(x2d, bias, self.quant_state)  # (M, out)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def matmul(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x2d @ W^T + bias outside autograd, in x2d's dtype (computed in compute_dtype): (M, in) -> (M, out).

        With `matmul_input_grad`, what an adapter layer that owns the autograd node of the whole
        layer (``peftlab.methods.lora.fused``) needs from its base.
        """
        self._check_features(x2d)
        bias = None if bias is None else bias.to(self.compute_dtype)
        return nf4_linear(x2d.to(self.compute_dtype), self.quant_state, bias).to(x2d.dtype)

    def matmul_input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """grad @ W in grad's dtype: the input gradient of `matmul`, (M, out) -> (M, in)."""
        return nf4_linear_input_grad(grad.to(self.compute_dtype), self.quant_state).to(grad.dtype)

    def _check_features(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear4bit expects inputs with {self.in_features} features, got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        nested = f", double_quant (nested blocks of {NESTED_BLOCK_SIZE})" if self.nested_absmax is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"nf4 block_size={self.block_size}{nested}, compute_dtype={self.compute_dtype}")
