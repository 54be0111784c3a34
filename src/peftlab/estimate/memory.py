"""Training memory = weights + gradients + optimizer states + activations, two models.

"seed": the source documents' `estimate_training_memory`, verbatim in arithmetic (fp16 frozen weights,
trainable weights at 2 bytes, fp32 gradients 4·t, AdamW 2·4·t, activations
B·T·d·2·4·L), so its tables reproduce exactly.

"detailed": bytes per parameter by precision, with AdamW's two fp32 states (8 bytes) per
trainable parameter:

    precision    frozen  trainable (working + master)  gradient  activations
    fp32         4       4                              4         4
    bf16-mixed   2       2 + 4 (fp32 master)            2         2

QLoRA stores the frozen block linear weights in NF4 (`peftlab.quant.layout.nf4_bytes`); embeddings, norms
and the LM head stay at the frozen precision, as bitsandbytes leaves them.

Per device of N processes (`per_device`, computed at this device's ⌈B/N⌉ rows of the global
batch, as `torchrun ... peftlab train` splits it):

    data parallel   weights, gradients and AdamW state whole on every device
    FSDP2           each device keeps 1/N of every parameter, gradient and AdamW state, plus
                    what is gathered while it computes: the root's parameters (embeddings, head,
                    final norm) for the whole step, two blocks at a time (the one computing
                    and the next, prefetched) and one block's unsharded gradients
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from peftlab.errors import ConfigError
from peftlab.estimate.activations import ATTENTION, activation_bytes
from peftlab.core.footprint import Footprint
from peftlab.core.shapes import ModelShape

MEMORY_MODELS = ("seed", "detailed")
DEVICES = ("cuda", "cpu")
ADAMW_STATE_BYTES = 2 * 4  # exp_avg and exp_avg_sq in fp32


@dataclass(frozen=True)
class Precision:
    frozen: int
    trainable: int
    master: int
    gradient: int
    activation: int


PRECISIONS = {"fp32": Precision(4, 4, 0, 4, 4), "bf16-mixed": Precision(2, 2, 4, 2, 2)}


@dataclass(frozen=True)
class Memory:
    """Training memory in bytes; `activation_detail` names each saved tensor's bytes."""

    model: str
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activation_detail: dict[str, int]
    per_device: dict[str, int] | None = None  # with N processes: how the figures were divided

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def seed_memory(total_params: int, trainable_params: int, *, batch_size: int = 4,
                seq_len: int = 512, hidden_dim: int = 4096, num_layers: int = 32) -> Memory:
    """The source documents' `estimate_training_memory(precision="fp16")`, term by term."""
    bytes_per_param = 2
    weights = (total_params - trainable_params) * 2 + trainable_params * bytes_per_param
    activations = batch_size * seq_len * hidden_dim * bytes_per_param * 4 * num_layers
    return Memory("seed", weights, trainable_params * 4, trainable_params * ADAMW_STATE_BYTES,
                  activations, {"B·T·d·2 bytes·4·L": activations})


def detailed_memory(shape: ModelShape, method: Footprint, *, trainable: int, trained_base: int,
                    num_labels: int | None, batch_size: int, seq_len: int,
                    precision: str = "bf16-mixed", attention: str = "eager",
                    gradient_checkpointing: bool = False, device: str = "cuda", fused_head: bool = True) -> Memory:
    """Memory of one AdamW training step for `method` on `shape`.

    trainable: every trainable parameter (adapter + head + base parameters that train);
    trained_base: the part of it that belongs to the base model (full FT, LoRA biases), so
    the frozen base is total − trained_base. device "cpu" keeps dropout masks as float noise
    of the compute dtype, "cuda" as bool. fused_head: the loss computed with a causal LM's head
    (`train/lm_loss.py`; FSDP-sharded runs keep transformers' logits).
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown; use one of: "
                          f"{', '.join(PRECISIONS)}")
    if device not in DEVICES:
        raise ConfigError(f"device {device!r} is unknown; use one of: {', '.join(DEVICES)}")
    if attention not in ATTENTION:
        raise ConfigError(f"attention {attention!r} is unknown; use one of: "
                          f"{', '.join(ATTENTION)}")
    p = PRECISIONS[precision]
    frozen = shape.total_params(num_labels) - shape.head_params(num_labels) - trained_base
    frozen_bytes = frozen * p.frozen
    # A method may store the frozen block linear weights (not biases) differently (NF4).
    for linear in shape.layer_linears():
        numel = linear.in_features * linear.out_features
        stored = method.frozen_weight_bytes(numel, p.frozen)
        frozen_bytes += (stored - numel * p.frozen) * shape.layers
    acts = activation_bytes(shape, method, batch_size=batch_size, seq_len=seq_len,
                            act_bytes=p.activation, device=device, attention=attention,
                            gradient_checkpointing=gradient_checkpointing, num_labels=num_labels,
                            fused_head=fused_head)
    total_acts = acts.pop("total")
    return Memory("detailed", frozen_bytes + trainable * (p.trainable + p.master),
                  trainable * p.gradient, trainable * ADAMW_STATE_BYTES, total_acts, acts)


def per_device_memory(memory: Memory, shape: ModelShape, *, processes: int, fsdp: bool, root_params: int,
                      trainable_root: int, precision: str) -> Memory:
    """`memory` (computed at this device's rows) as one of `processes` devices holds it.

    root_params: base parameters outside the transformer blocks (embeddings, head, final norm);
    trainable_root: the trainable parameters among them or beside them (head, soft prompts).
    """
    if not fsdp or processes == 1:
        return Memory(memory.model, memory.weights, memory.gradients, memory.optimizer, memory.activations,
                      memory.activation_detail, {"processes": processes, "sharded": 0})
    p = PRECISIONS[precision]
    root_bytes = (root_params - trainable_root) * p.frozen + trainable_root * (p.trainable + p.master)
    block_bytes = max(0, memory.weights - root_bytes) // shape.layers
    block_gradients = max(0, memory.gradients - trainable_root * p.gradient) // shape.layers

    def shard(total: int) -> int:
        return math.ceil(total / processes)

    gathered = root_bytes + 2 * block_bytes
    detail = {"processes": processes, "sharded": 1, "weights_shard": shard(memory.weights),
              "gathered_root": root_bytes, "gathered_blocks": 2 * block_bytes,
              "gradients_shard": shard(memory.gradients), "gathered_gradients": trainable_root * p.gradient
              + block_gradients}
    return Memory(memory.model, shard(memory.weights) + gathered,
                  detail["gradients_shard"] + detail["gathered_gradients"], shard(memory.optimizer),
                  memory.activations, memory.activation_detail, detail)
