"""The fused LoRA linear node: the same values and gradients as the op-by-op path, wherever it applies.

The reference is the layer's own op-by-op path (base layer, then each adapter's A, B, scaling and
sum), reached by switching the fused entry point off.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import peftlab
import peftlab.methods.lora.layer as lora_module
from peftlab.methods.dora import DoraConfig
from peftlab.methods.dora.layer import DoraLinear
from peftlab.methods.lora.layer import LoraLinear
from tiny_models import tiny_batch, tiny_model


def _randomise_b(model, seed=3):
    """B = 0 at init would hide every error in B's path: give the adapters a random start."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoraLinear):
                for name in layer.lora_B:
                    layer.lora_B[name].weight.normal_(std=0.2)


def _loss_and_grads(model, batch, fused: bool, monkeypatch, seed=5):
    with monkeypatch.context() as patch:
        if not fused:
            patch.setattr(lora_module, "fused_lora_forward", lambda layer, x: None)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same dropout masks on both paths
        loss = model(**batch).logits.pow(2).mean()
        loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _fused_nodes(model, batch) -> int:
    """How many fused nodes the graph of one forward holds."""
    output = model(**batch).logits
    seen, stack, count = set(), [output.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += type(node).__name__ == "_FusedLoraLinearBackward"
        stack.extend(next_node for next_node, _ in node.next_functions)
    return count


CASES = {
    "llama all-linear": ("llama", "causal-lm", "lora", dict(r=4, target_modules="all-linear")),
    "llama dropout": ("llama", "causal-lm", "lora", dict(r=4, target_modules="all-linear", dropout=0.3)),
    "gpt2 dropout + trainable biases": ("gpt2", "causal-lm", "lora", dict(r=4, target_modules=("c_attn", "c_fc"),
                                                                          dropout=0.3, bias="all")),
    "bert rsLoRA": ("bert", "classification", "lora", dict(r=8, target_modules=("query", "value", "dense"),
                                                            use_rslora=True)),
    "gpt2 Conv1D": ("gpt2", "causal-lm", "lora", dict(r=4, target_modules=("c_attn", "c_fc", "mlp.c_proj"))),
    "qlora float32": ("llama", "causal-lm", "qlora", dict(r=4, target_modules="all-linear")),
    "qlora bfloat16 compute": ("llama", "causal-lm", "qlora", dict(r=4, target_modules="all-linear",
                                                                   compute_dtype="bfloat16")),
    "qlora gpt2": ("gpt2", "causal-lm", "qlora", dict(r=4, target_modules=("c_attn", "c_fc"), bias="lora_only")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_equals_op_by_op(case, monkeypatch):
    arch, task, method, fields = CASES[case]
    model = peftlab.apply(tiny_model(arch, task), peftlab.make_config(method, **fields))
    _randomise_b(model)
    model.train()
    batch = tiny_batch()
    batch.pop("labels")
    adapted = sum(isinstance(m, LoraLinear) for m in model.modules())
    assert _fused_nodes(model, batch) == adapted
    loss, grads = _loss_and_grads(model, batch, True, monkeypatch)
    expected_loss, expected_grads = _loss_and_grads(model, batch, False, monkeypatch)
    tolerance = 5e-3 if "bfloat16" in case else 1e-5
    assert torch.allclose(loss, expected_loss, rtol=tolerance, atol=tolerance)
    assert grads.keys() == expected_grads.keys()
    assert any("base_layer.bias" in name for name in grads) == ("bias" in fields)
    for name, grad in grads.items():
        scale = expected_grads[name].abs().max().item() + 1e-6
        assert torch.allclose(grad, expected_grads[name], rtol=tolerance, atol=tolerance * scale), name


def test_two_active_adapters_and_a_merged_one(monkeypatch):
    """Every unmerged active adapter joins the node; a merged one is already in the weight."""
    targets = ("q_proj", "v_proj", "down_proj")
    model = peftlab.apply(tiny_model("llama", "causal-lm"), peftlab.LoraConfig(r=4, target_modules=targets))
    model.add_adapter("second", peftlab.LoraConfig(r=2, alpha=8, target_modules=targets))
    model.add_adapter("merged", peftlab.LoraConfig(r=3, target_modules=targets))
    _randomise_b(model)
    model.set_active(["default", "second", "merged"])
    model.merge(["merged"])
    model.train()
    batch = {"input_ids": tiny_batch()["input_ids"]}
    loss, grads = _loss_and_grads(model, batch, True, monkeypatch)
    expected_loss, expected_grads = _loss_and_grads(model, batch, False, monkeypatch)
    assert torch.allclose(loss, expected_loss, rtol=1e-5)
    assert any("second" in name for name in grads)
    for name, grad in grads.items():
        assert torch.allclose(grad, expected_grads[name], rtol=1e-4, atol=1e-6), name


def test_input_gradient_and_no_grad_inference():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    layer = LoraLinear(copy.deepcopy(base).requires_grad_(False))
    layer.add_adapter("a", peftlab.LoraConfig(r=4))
    layer.active_adapters = ("a",)
    nn.init.normal_(layer.lora_B["a"].weight)
    x = torch.randn(2, 3, 16, requires_grad=True)
    out = layer(x)
    assert type(out.grad_fn).__name__ == "ViewBackward0"  # a view of the fused node's (M, out) output
    lora_a, lora_b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    reference = base(x) + (x @ lora_a.t() @ lora_b.t()) * layer.scaling["a"]
    assert torch.allclose(out, reference, atol=1e-5)
    (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
    (expected,) = torch.autograd.grad(reference.pow(2).sum(), x)
    assert torch.allclose(grad, expected, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(layer(x), reference, atol=1e-5)


@pytest.mark.parametrize("situation", ["autocast", "row selection", "trainable base weight", "hooked base",
                                       "bfloat16 base", "Linear subclass", "DoRA"])
def test_falls_back_where_it_does_not_apply(situation, monkeypatch):
    class MyLinear(nn.Linear):
        pass

    base = MyLinear(16, 12) if situation == "Linear subclass" else nn.Linear(16, 12)
    base.requires_grad_(situation == "trainable base weight")
    if situation == "DoRA":  # the magnitude rescales W x too: more than s·B A x
        layer = DoraLinear(base.requires_grad_(False))
        layer.add_adapter("a", DoraConfig(r=4))
    else:
        layer = LoraLinear(base)
        layer.add_adapter("a", peftlab.LoraConfig(r=4))
    layer.active_adapters = ("a",)
    x = torch.randn(2, 16)
    if situation == "hooked base":
        base.register_forward_hook(lambda module, args, output: None)
    if situation == "bfloat16 base":
        base.to(torch.bfloat16)
    monkeypatch.setattr(lora_module, "fused_lora_forward",
                        _recording(lora_module.fused_lora_forward, returned := []))
    if situation == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            layer(x)
    elif situation == "row selection":
        layer.row_adapters = (("a",), ())
        layer(x)
    else:
        layer(x.to(base.weight.dtype))
    assert returned == [None]


def _recording(function, returned):
    def record(layer, x):
        returned.append(function(layer, x))
        return returned[-1]
    return record


def test_gpt2_conv1d_weight_layout():
    torch.manual_seed(0)
    conv = Conv1D(12, 16)  # weight (in=16, out=12)
    nn.init.normal_(conv.weight)
    layer = LoraLinear(copy.deepcopy(conv).requires_grad_(False))
    layer.add_adapter("a", peftlab.LoraConfig(r=4))
    layer.active_adapters = ("a",)
    nn.init.normal_(layer.lora_B["a"].weight)
    x = torch.randn(5, 16)
    lora_a, lora_b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    assert torch.allclose(layer(x), conv(x) + x @ lora_a.t() @ lora_b.t() * layer.scaling["a"], atol=1e-5)


def test_the_thread_count_is_restored_even_after_an_error():
    """The rank-r products run on one thread; the caller's thread count comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = LoraLinear(nn.Linear(16, 12).requires_grad_(False))
        layer.add_adapter("a", peftlab.LoraConfig(r=4))
        layer.active_adapters = ("a",)
        layer(torch.randn(3, 16, requires_grad=True)).sum().backward()
        assert torch.get_num_threads() == 2
        layer.lora_A["a"].weight.data = torch.randn(4, 15)  # a corrupt adapter: the product fails
        with pytest.raises(RuntimeError):
            layer(torch.randn(3, 16))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
