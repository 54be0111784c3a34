"""LoRA linear layers as one autograd node: the training hot path of LoRA and QLoRA.

    y = x Wᵀ + b + Σ_i (s_i · d_i(x) A_iᵀ) B_iᵀ        x: (M, in)  W: (out, in) frozen  A_i: (r, in)  B_i: (out, r)

Written as separate ops (base linear, A, B, × s, +) each layer is ~6 autograd nodes and ~12
parallel regions per step, and the scaling and the sum each pass over an (M, out) tensor. Here the
forward is one matmul for the base and, per adapter, a small (M, r) product scaled in place and
accumulated into the base output by ``addmm_``; the backward computes the base's input gradient
and adds each adapter's into the same tensor::

    forward    y = base(x);          h_i = s_i · d_i(x) A_iᵀ   (M, r);    y += h_i B_iᵀ
    backward   g_x = base'(g);       g_h = s_i · g B_i (M, r);  g_B = gᵀ h_i;  g_A = g_hᵀ d_i(x);  g_x += g_h A_i

The rank-r products use PyTorch's threads like every other op. (They once ran on one thread, to
spare a loaded machine the wait for every thread at each small parallel region; on an idle 2-core
machine that made the SmolLM2 step 4-5 % slower, and under load 3.5 the whole step was 4x slower
either way with no difference between the two: BENCHMARKS.md, issue 20.)

Saved for backward: the input (and each adapter's dropped-out input, if dropout is on), h_i and
the factors; the base weight is referenced, never copied (a 4-bit base is dequantized again).
It applies where the base is a frozen ``nn.Linear``, GPT-2 ``Conv1D`` or 4-bit linear in the
adapters' dtype, without autocast, hooks on the base, or per-row adapter selection; everything
else takes the layer's op-by-op path, which computes the same values.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from transformers.pytorch_utils import Conv1D


class _DenseBase:
    """The frozen weight of an ``nn.Linear`` ((out, in)) or ``Conv1D`` ((in, out)) as two matmuls."""

    def __init__(self, weight: torch.Tensor, transposed: bool) -> None:
        self.weight_t = weight if transposed else weight.t()  # (in, out)

    def matmul(self, x2d: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # (M, in) -> (M, out)
        return torch.mm(x2d, self.weight_t) if bias is None else torch.addmm(bias, x2d, self.weight_t)

    def matmul_input_grad(self, grad: torch.Tensor) -> torch.Tensor:  # (M, out) -> (M, in)
        return torch.mm(grad, self.weight_t.t())


def _frozen_base(base: nn.Module, dtype: torch.dtype):
    """The base layer's matmuls if it is a frozen linear computing in `dtype` without hooks, else None."""
    if base._forward_hooks or base._forward_pre_hooks:
        return None
    if getattr(base, "is_quantized_linear", False):
        return base if hasattr(base, "matmul_input_grad") else None  # peftlab's Linear4bit
    if type(base) not in (nn.Linear, Conv1D) or base.weight.requires_grad or base.weight.dtype != dtype:
        return None
    return _DenseBase(base.weight, transposed=type(base) is Conv1D)


class _FusedLoraLinear(torch.autograd.Function):
    """One node for the base linear and every unmerged adapter (see the module docstring)."""

    @staticmethod
    def forward(ctx, x2d, bias, base, scalings, dropped, *factors):  # factors: A_i, B_i[, d_i(x)] ...
        out = base.matmul(x2d, bias)  # (M, out), ours to update in place
        hiddens, position = [], 0
        for scaling, has_dropout in zip(scalings, dropped):
            lora_a, lora_b = factors[position], factors[position + 1]
            x_adapter = factors[position + 2] if has_dropout else x2d
            position += 3 if has_dropout else 2
            hidden = torch.mm(x_adapter, lora_a.t()).mul_(scaling)  # (M, r)
            out.addmm_(hidden, lora_b.t())  # (M, r) @ (r, out)
            hiddens.append(hidden)
        ctx.base, ctx.scalings, ctx.dropped = base, scalings, dropped
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x2d, *factors, *hiddens)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # grad: (M, out)
        x2d, *rest = ctx.saved_tensors
        factors, hiddens = rest[: len(rest) - len(ctx.scalings)], rest[len(rest) - len(ctx.scalings):]
        needs = iter(ctx.needs_input_grad[5:])
        grad_x = ctx.base.matmul_input_grad(grad) if ctx.needs_input_grad[0] else None
        grad_factors, position = [], 0
        for scaling, has_dropout, hidden in zip(ctx.scalings, ctx.dropped, hiddens):
            lora_a, lora_b = factors[position], factors[position + 1]
            x_adapter = factors[position + 2] if has_dropout else x2d
            position += 3 if has_dropout else 2
            need_a, need_b = next(needs), next(needs)
            need_input = next(needs) if has_dropout else grad_x is not None
            grad_hidden = torch.mm(grad, lora_b)  # (M, r): dL/dh_i
            grad_b = torch.mm(grad.t(), hidden) if need_b else None  # (out, r)
            grad_hidden.mul_(scaling)  # dL/d(d_i(x) A_iᵀ)
            grad_a = torch.mm(grad_hidden.t(), x_adapter) if need_a else None  # (r, in)
            grad_input = None
            if need_input and has_dropout:
                grad_input = torch.mm(grad_hidden, lora_a)  # (M, in), flows back through the dropout
            elif need_input:
                grad_x.addmm_(grad_hidden, lora_a)
            grad_factors += [grad_a, grad_b] + ([grad_input] if has_dropout else [])
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[1] else None
        return (grad_x, grad_bias, None, None, None, *grad_factors)


def fused_lora_forward(layer, x: torch.Tensor) -> torch.Tensor | None:
    """`layer`'s output (a ``LoraLinear``) through the fused node, or None where it does not apply."""
    names = layer.unmerged_active()
    if not names or layer.row_adapters is not None or torch.is_autocast_enabled(x.device.type):
        return None
    if not all(layer.low_rank_delta(name) for name in names):  # DoRA's magnitude is more than s·B A x
        return None
    base = _frozen_base(layer.base_layer, x.dtype)
    if base is None:
        return None
    x2d = x.reshape(-1, x.shape[-1])  # (M, in)
    scalings, dropped, factors = [], [], []
    for name in names:
        lora_a, lora_b = layer.lora_A[name].weight, layer.lora_B[name].weight
        if lora_a.dtype != x.dtype or lora_b.dtype != x.dtype:
            return None
        dropout = layer.lora_dropout[name]
        x_adapter = x2d if isinstance(dropout, nn.Identity) else dropout(x2d)  # x2d itself unless training
        scalings.append(layer.scaling[name])
        dropped.append(x_adapter is not x2d)
        factors += [lora_a, lora_b] + ([x_adapter] if x_adapter is not x2d else [])
    out = _FusedLoraLinear.apply(x2d, layer.base_layer.bias, base, tuple(scalings), tuple(dropped), *factors)
    return out.view(*x.shape[:-1], out.shape[-1])
