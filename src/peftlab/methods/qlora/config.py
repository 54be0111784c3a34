"""QLoRA's declaration (torch-free): LoRA's config plus the NF4 quantization of the frozen base.

QLoRA (Dettmers et al. 2023, arXiv:2305.14314) trains LoRA over frozen block linears stored in
4-bit NormalFloat with double quantization; the modules are in `layer.py`, the format in
`peftlab.quant`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.methods.lora.config import LoraConfig, LoraFootprint
from peftlab.quant.layout import nf4_bits_per_param, nf4_bytes

BlockSize = Literal[32, 64, 128, 256, 512, 1024, 2048, 4096]  # `peftlab.quant.layout.BLOCK_SIZES`


@dataclass(frozen=True)
class QLoraConfig(LoraConfig):
    """LoRA's fields (see `LoraConfig`) plus how the frozen base is quantized.

    block_size: NF4 block size, a power of two in 32..4096 (64 as in the paper).
    double_quant: quantize the block scales to 8 bits as well (~0.127 bits/param instead of 0.5).
    compute_dtype: "float32" | "bfloat16", the precision of the 4-bit layers' matmuls.
    quantize_modules: the frozen linears to quantize (`peftlab.core.targets` syntax); None =
        every linear layer in the transformer blocks. Embeddings and output heads stay float.
        Layers already quantized (a second QLoRA adapter) keep their quantization.
    """

    method: ClassVar[str] = "qlora"
    block_size: BlockSize = 64
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    quantize_modules: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class QLoraFootprint(LoraFootprint):
    """LoRA's count; the frozen block linear weights are stored in NF4 (`quant.layout.nf4_bytes`)."""

    config: QLoraConfig

    def notes(self, shape):
        bits = nf4_bits_per_param(self.config.block_size, self.config.double_quant)
        return (f"frozen block linear weights stored in NF4 at {bits:.6g} bits per parameter",)

    def frozen_weight_bytes(self, numel, bytes_per_param):
        return nf4_bytes(numel, self.config.block_size, self.config.double_quant)


DECLARATION = MethodDeclaration(
    name="qlora", config_class=QLoraConfig, label="QLoRA",
    # Quantization changes the base: a fresh QLoRA model computes the quantized base.
    capabilities=Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=False),
    implementation="peftlab.methods.qlora.layer:QLora", footprint=QLoraFootprint,
    literature=Literature(1e-3, {"r": 16, "alpha": 32.0, "dropout": 0.1},
                          "QLoRA (Dettmers et al. 2023): LoRA's settings over an NF4 base",
                          sweep=(5e-4, 1e-3, 2e-3)),
    paper="Dettmers et al. 2023, QLoRA: Efficient Finetuning of Quantized LLMs, arXiv:2305.14314",
    # Its files are LoRA files; the "peftlab" block they carry says QLoRA and the quantization.
    hf_peft_type="LORA", reads_plain_hf_files=False,
    choose=Path(__file__).with_name("choose.json"),
)
