"""The fused loss head (`train/lm_loss.py`) against transformers' own causal-LM loss: same value,
same gradients, for every decoder row that declares it, every kind of method, masked labels,
chunked workspaces and `num_items_in_batch`; the loop uses it and trains as before."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import peftlab
from peftlab.core.architectures import ARCHITECTURES
from peftlab.train import lm_loss
from peftlab.train.lm_loss import FusedLmHead, linear_cross_entropy
from tests.tiny_models import VOCAB, tiny_model

DECODERS = ("gpt2", "llama", "mistral", "qwen2")


def lm_batch(seed: int = 1, batch: int = 3, seq: int = 9) -> dict:
    """Token ids with a padded last row; labels -100 on a 3-token prompt and on the padding."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq - 3:] = 0
    labels = ids.clone()
    labels[:, :3] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model: nn.Module, params: list[nn.Parameter], batch: dict, head: FusedLmHead | None):
    for param in params:
        param.grad = None
    if head is None:
        output = model(**batch)
    else:
        with head.forward() as extra:
            output = model(**batch, **extra)
    output.loss.backward()
    return output.loss.detach(), [param.grad.clone() for param in params], output.logits.shape


def assert_same_training_signal(model: nn.Module, params: list[nn.Parameter], batch: dict, head: FusedLmHead):
    expected_loss, expected_grads, logits_shape = loss_and_grads(model, params, batch, None)
    loss, grads, fused_logits_shape = loss_and_grads(model, params, batch, head)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-6)
    for grad, expected in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert fused_logits_shape == (*logits_shape[:-2], 0, VOCAB)  # no logits were computed
    assert not hasattr(head.model, "_loss_function")  # the model is left as it was


@pytest.mark.parametrize("arch", DECODERS)
@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_fused_head_gives_transformers_loss_and_gradients(arch, method):
    model = tiny_model(arch, "causal-lm")
    if method == "full":
        peft_model = peftlab.apply(model, peftlab.make_config("full"))
    else:
        peft_model = peftlab.apply(model, peftlab.make_config("lora", r=4, target_modules="all-linear"))
        torch.manual_seed(3)
        for param in peft_model.trainable_parameters().values():
            nn.init.normal_(param, std=0.1)  # B = 0 would leave A without a gradient
    params = list(peft_model.trainable_parameters().values())
    head = FusedLmHead.for_model(peft_model.model)
    assert head is not None
    peft_model.train()
    assert_same_training_signal(peft_model, params, lm_batch(), head)


@pytest.mark.parametrize("method", ["prompt", "prefix", "ia3", "adapters", "dora"])
def test_methods_that_change_the_sequence_or_the_blocks_get_the_same_signal(method):
    """Prompt tuning lengthens the sequence (its hook extends the labels with -100, which the
    fused loss reads as transformers would); prefix tuning adds keys; the others change blocks."""
    options = {"prompt": dict(num_virtual_tokens=4), "prefix": dict(num_virtual_tokens=4)}.get(method, {})
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"), peftlab.make_config(method, **options))
    torch.manual_seed(4)
    for param in peft_model.trainable_parameters().values():
        param.data.add_(0.1 * torch.randn_like(param))
    params = list(peft_model.trainable_parameters().values())
    peft_model.train()
    assert_same_training_signal(peft_model, params, lm_batch(), FusedLmHead.for_model(peft_model.model))


def test_chunks_bias_and_num_items_match_the_unfused_loss(monkeypatch):
    """Chunks of 2 rows (a workspace smaller than the batch), a head with a bias, and the summed
    loss divided by `num_items_in_batch` give cross-entropy's values and gradients."""
    monkeypatch.setattr("peftlab.core.architectures.LOSS_HEAD_WORKSPACE_BYTES", 2 * 4 * 50)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 6, 8, generator=generator, requires_grad=True)
    head = nn.Linear(8, 50)
    labels = torch.randint(0, 50, (2, 6), generator=generator)
    labels[0, :2] = -100
    for items in (None, torch.tensor(7)):
        logits = head(hidden)
        targets = nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
        reduction = "mean" if items is None else "sum"
        expected = nn.functional.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1), reduction=reduction)
        expected = expected if items is None else expected / items
        expected_grads = torch.autograd.grad(expected, (hidden, head.weight, head.bias))
        loss = linear_cross_entropy(hidden, head.weight, head.bias, labels, num_items_in_batch=items)
        grads = torch.autograd.grad(loss, (hidden, head.weight, head.bias))
        torch.testing.assert_close(loss, expected)
        for grad, want in zip(grads, expected_grads):
            torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    assert lm_loss.loss_head_rows(50) == 2


def test_no_labelled_token_is_nan_as_the_mean_of_nothing():
    hidden = torch.randn(1, 4, 8, requires_grad=True)
    loss = linear_cross_entropy(hidden, torch.randn(50, 8), None, torch.full((1, 4), -100))
    assert torch.isnan(loss)


def test_it_applies_only_where_the_row_declares_it_and_the_head_is_a_plain_linear():
    assert FusedLmHead.for_model(tiny_model("llama", "classification")) is None  # no lm_head
    assert FusedLmHead.for_model(tiny_model("bert", "classification")) is None
    assert all("linear_lm_head" in ARCHITECTURES[arch].features for arch in DECODERS)
    assert not any("linear_lm_head" in ARCHITECTURES[arch].features for arch in ("bert", "roberta", "distilbert"))
    lora_on_head = peftlab.apply(tiny_model("llama", "causal-lm"),
                                 peftlab.make_config("lora", r=2, target_modules=("lm_head",)))
    assert FusedLmHead.for_model(lora_on_head.model) is None  # the head is a LoRA layer now


def test_the_workspace_is_reused_between_steps_and_grows_with_the_batch():
    peft_model = peftlab.apply(tiny_model("gpt2", "causal-lm"), peftlab.make_config("lora", r=2))
    head = FusedLmHead.for_model(peft_model.model)
    pointers = []
    for seq in (9, 9, 12):
        with head.forward() as extra:
            peft_model(**lm_batch(seq=seq), **extra).loss.backward()
        assert head.workspace.shape == (3 * seq, VOCAB)  # one row per position of the batch
        pointers.append(head.workspace.data_ptr())
    assert pointers[0] == pointers[1] != pointers[2]


def test_the_estimator_counts_the_workspace_instead_of_the_logits():
    from peftlab.estimate import Settings, estimate

    fused = estimate("smollm2-135m", "lora", Settings(batch_size=4, seq_len=128, device="cpu"))
    detail = fused.memory.activation_detail
    assert detail["loss head workspace (logits, a chunk of rows)"] == 4 * 128 * 49152 * 4
    assert "logits" not in detail and "log-softmax" not in detail
    sharded = estimate("smollm2-135m", "lora", Settings(batch_size=4, seq_len=128, device="cpu", processes=2,
                                                        fsdp=True))
    assert "log-softmax" in sharded.memory.activation_detail  # FSDP runs keep transformers' loss


def test_under_autocast_the_head_computes_in_bfloat16_as_transformers_does():
    peft_model = peftlab.apply(tiny_model("llama", "causal-lm"), peftlab.make_config("lora", r=2))
    head = FusedLmHead.for_model(peft_model.model)
    batch = lm_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = peft_model(**batch).loss
        with head.forward() as extra:
            loss = peft_model(**batch, **extra).loss
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=1e-2)
    assert head.workspace is None  # bf16 logits are computed per chunk, not into the float32 workspace


def test_in_bfloat16_the_estimator_also_counts_the_chunk_before_its_upcast():
    from peftlab.estimate import Settings, estimate

    detail = estimate("smollm2-135m", "lora", Settings(batch_size=4, seq_len=128)).memory.activation_detail
    assert detail["loss head chunk in the compute dtype"] == 4 * 128 * 49152 * 2  # bf16-mixed: 2 bytes
    assert detail["loss head workspace (logits, a chunk of rows)"] == 4 * 128 * 49152 * 4
