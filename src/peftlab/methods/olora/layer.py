"""OLoRA: LoRA whose factors start from the QR decomposition of W, the residual frozen in its place.

    W = Q R                           (out × in) = (out × k)(k × in), k = min(out, in), float32
    A = R[:r]   (r × in)             B = Q[:, :r]   (out × r)
    W_res = W − s · B A               written back into the base layer

B starts orthonormal. The write-back, the layers it accepts and the file convention
(`init_lora_weights: "olora"`, residual recomputed on loading) are PiSSA's (`pissa/layer.py`).
GPT-2's Conv1D weight is factored as nn.Linear's (out × in) layout, so A and B keep LoRA's shapes.
"""

from __future__ import annotations

import torch

from peftlab.methods.olora.config import DECLARATION
from peftlab.methods.pissa.layer import ResidualInitLora


class Olora(ResidualInitLora):
    declaration = DECLARATION

    def initial_factors(self, weight, config, scaling):
        q, r = torch.linalg.qr(weight)  # (out, k), (k, in)
        return r[:config.r], q[:, :config.r]  # A (r, in), B (out, r)
