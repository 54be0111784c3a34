"""The causal-LM training loss as one node with the head: no (tokens × vocab) tensors per step.

A decoder's loss head is the largest matmul of a small model's step and the only activation that
grows with the vocabulary. Through `transformers` it is ``logits = lm_head(h)`` (N, V), then
log-softmax (another (N, V)), and in the backward the log-softmax gradient and a zero-filled NLL
gradient, two more: on SmolLM2-135M (V = 49,152) a 4 × 128 batch allocates four fresh 100 MB
float32 tensors per step. Past glibc's largest reusable block (32 MiB) each one is new memory from
the kernel, page-faulted and zeroed on first touch: measured inside the training step, that made
the head's forward matmul 2× slower than the same matmul in isolation, and the fills and softmax
passes 4–8× slower. Here the head and the loss are one autograd node:

    h: (K, d) the hidden rows that carry a label     W: (V, d) the head     C rows at a time:
        z = h_c Wᵀ (+ b)                   (C, V) float32, written into a workspace kept for the run
        loss_c = Σ logsumexp(z) − z[target]
        p = softmax(z) − onehot(target)    in place: ∂loss/∂z
        ∂h_c = p W      ∂W += pᵀ h_c      ∂b += Σ_rows p

The gradients are formed in the forward (the loss is the last op of the graph, so nothing is
computed that the backward would not need), and the backward only scales them by the incoming
gradient. Rows whose label is -100 (prompt, padding, prompt tuning's virtual tokens) never reach
the head. The value is `transformers`' ``ForCausalLMLoss`` (the mean over labelled tokens, or
their sum / ``num_items_in_batch``) to float32 rounding; ``tests/train/test_lm_loss.py`` checks
loss and gradients against it.

Memory: the workspace (min(N, `workspace_rows`) × V float32) and ∂h (K × d) replace the logits and
log-softmax that `transformers` keeps (2 × N × V), so the peak drops for every batch bigger than
one chunk; the estimator (`estimate/activations.py`) counts the same tensors.

It applies where the model's table row declares ``"linear_lm_head"`` (`core/architectures.py`: the
causal-LM forward is ``lm_head(hidden)`` and takes ``logits_to_keep``) and the head is a plain
``nn.Linear``; the forward then returns empty logits (B, 0, V) beside this loss.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from peftlab.core.architectures import ARCHITECTURES, loss_head_rows
from peftlab.data.collators import IGNORE_INDEX


class _LinearCrossEntropy(torch.autograd.Function):
    """Σ over rows of cross-entropy(h Wᵀ + b, target), gradients formed in the forward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, workspace):  # (K, d), (V, d), (V,)|None, (K,), C, (C, V)|None
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        for start in range(0, hidden.shape[0], chunk):
            rows = hidden[start:start + chunk]  # (C, d)
            target = targets[start:start + chunk, None]  # (C, 1)
            logits = _head(rows, weight, bias, None if workspace is None else workspace[:rows.shape[0]])  # (C, V)
            target_logit = logits.gather(1, target)
            peak = logits.amax(1, keepdim=True)
            exponentials = logits.sub_(peak).exp_()  # exp(z - max), in place
            normalizer = exponentials.sum(1, keepdim=True)
            total += (peak + normalizer.log() - target_logit).sum()
            if not (need_hidden or need_weight or need_bias):
                continue
            probabilities = exponentials.div_(normalizer)
            probabilities.scatter_add_(1, target, torch.full_like(target_logit, -1.0))  # ∂loss/∂z
            if need_hidden:
                grad_hidden[start:start + chunk] = torch.mm(probabilities.to(weight.dtype), weight)
            if need_weight:
                grad_weight.addmm_(probabilities.t(), rows.float())
            if need_bias:
                grad_bias += probabilities.sum(0)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # grad: () float32
        scaled = [None if g is None else (g * grad).to(dtype) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes)]
        return (*scaled, None, None, None)


def _head(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
          out: torch.Tensor | None) -> torch.Tensor:
    """rows Wᵀ + b as float32 (C, V), written into `out` when given (see `uses_workspace`)."""
    if out is not None:
        return torch.mm(rows, weight.t(), out=out) if bias is None else torch.addmm(bias, rows, weight.t(), out=out)
    logits = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
    return logits.float()  # computed in the compute dtype (autocast, bf16 weights), upcast as transformers does


def uses_workspace(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the head's matmul computes in float32, so its logits can go straight into a float32
    workspace; under autocast or with bf16 weights each chunk is computed in that dtype instead."""
    return hidden.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(hidden.device.type)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         labels: torch.Tensor, *, num_items_in_batch: Any = None,
                         shift_labels: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                         workspace: torch.Tensor | None = None) -> torch.Tensor:
    """The next-token loss of `hidden` (B, T, d) under the head `weight` (V, d) (+ `bias`) for
    `labels` (B, T): the mean over labelled positions, or their sum / `num_items_in_batch`.

    `workspace`: a float32 (C, V) buffer the head's logits are written into, C rows at a time
    (without one, chunks of `loss_head_rows(V)` rows are allocated as they come).
    """
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden.device)  # (N,): each position's next token
    rows = (targets != ignore_index).nonzero().squeeze(1)  # (K,)
    selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)  # (K, d)
    chunk = loss_head_rows(weight.shape[0]) if workspace is None else workspace.shape[0]
    total = _LinearCrossEntropy.apply(selected, weight, bias, targets.index_select(0, rows), chunk, workspace)
    if num_items_in_batch is None:
        return total / rows.numel()  # 0/0 = nan with no labelled token, as torch's mean reduction
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class FusedLmHead:
    """The training loss of one causal-LM run through `linear_cross_entropy`, with its workspace.

        head = FusedLmHead.for_model(hf_model)      # None where it does not apply
        with head.forward() as extra:
            loss = model(**batch, **extra).loss     # model: hf_model, or a wrapper that calls it

    Inside `forward()` a hook on the decoder keeps its last hidden state, ``logits_to_keep`` (an
    empty position index) makes ``lm_head`` compute nothing, and the model's ``loss_function``
    (`transformers`' own override point) computes this loss from the kept hidden state and the
    labels the model received (so labels that a prompt-tuning hook extended are the ones scored).
    Outside, the model is untouched: evaluation and generation take `transformers`' path.
    """

    def __init__(self, model: nn.Module, head: nn.Linear) -> None:
        self.model, self.head = model, head
        self.workspace: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: nn.Module) -> FusedLmHead | None:
        """The fused head of Hugging Face causal LM `model`, or None if its row does not declare
        ``linear_lm_head`` or its head is not a plain ``nn.Linear`` (a LoRA or a 4-bit head)."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        row = ARCHITECTURES.get(getattr(getattr(model, "config", None), "model_type", None))
        if type(head) is not nn.Linear or row is None or "linear_lm_head" not in row.features:
            return None
        return cls(model, head)

    def _workspace(self, hidden: torch.Tensor, rows: int) -> torch.Tensor | None:
        """The run's workspace, grown to `rows` (up to one chunk); None where it is not used."""
        if not uses_workspace(hidden, self.head.weight):
            return None
        vocab = self.head.weight.shape[0]
        wanted = min(max(1, rows), loss_head_rows(vocab))
        if self.workspace is None or self.workspace.shape[0] < wanted or self.workspace.device != hidden.device:
            self.workspace = hidden.new_empty(wanted, vocab, dtype=torch.float32)
        return self.workspace[:wanted]

    @contextlib.contextmanager
    def forward(self) -> Iterator[dict[str, Any]]:
        """Inside, one forward of the model given the yielded arguments computes this loss."""
        kept: dict[str, torch.Tensor] = {}

        def keep_hidden(module, args, output):
            kept["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

        def loss_function(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=IGNORE_INDEX,
                          shift_labels=None, **kwargs):
            hidden = kept.pop("hidden")
            rows = labels.numel() if shift_labels is None else shift_labels.numel()
            return linear_cross_entropy(hidden, self.head.weight, self.head.bias, labels,
                                        num_items_in_batch=num_items_in_batch, shift_labels=shift_labels,
                                        ignore_index=ignore_index, workspace=self._workspace(hidden, rows))

        model = self.model
        had_override, previous = hasattr(model, "_loss_function"), getattr(model, "_loss_function", None)
        hook = model.base_model.register_forward_hook(keep_hidden)
        model.loss_function = loss_function
        try:
            yield {"logits_to_keep": torch.empty(0, dtype=torch.long, device=self.head.weight.device)}
        finally:
            hook.remove()
            if had_override:
                model.loss_function = previous
            else:
                del model._loss_function


def head_arguments(head: FusedLmHead | None) -> contextlib.AbstractContextManager[dict[str, Any]]:
    """`head.forward()`, or no extra forward arguments where the run has no fused head."""
    return contextlib.nullcontext({}) if head is None else head.forward()
