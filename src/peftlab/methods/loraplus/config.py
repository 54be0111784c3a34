"""LoRA+'s declaration (torch-free): LoRA with B trained λ times faster than A.

LoRA+ (Hayou, Ghosh & Yu 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models",
arXiv:2402.12354) shows that A and B at one learning rate are not efficient for wide models and
sets η_B = λ · η_A (λ = 16 in its experiments). Nothing about the layers changes: the method is an
optimizer grouping (`layer.py`), so it counts, merges and saves as LoRA does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from peftlab.core.config import Annotated, Range
from peftlab.core.declaration import Capabilities, Literature, MethodDeclaration
from peftlab.methods.lora.config import LoraConfig, LoraFootprint


@dataclass(frozen=True)
class LoraPlusConfig(LoraConfig):
    """LoRA's fields (see `LoraConfig`) plus the learning rates of the LoRA+ grouping.

    lr_ratio: λ = η_B / η_A (> 0; 16 as in the paper); one-dimensional tensors (biases, head bias)
        train at η_B too, as Hugging Face PEFT's `create_loraplus_optimizer` groups them.
    embedding_lr_ratio: the rate of LoRA factors on an embedding relative to η_A (> 0). Hugging Face
        PEFT gives them an absolute 1e-6 (`loraplus_lr_embedding`), which is this ratio × the run's rate.
    """

    method: ClassVar[str] = "loraplus"
    lr_ratio: Annotated[float, Range(gt=0)] = 16.0
    embedding_lr_ratio: Annotated[float, Range(gt=0)] = 1e-3


DECLARATION = MethodDeclaration(
    name="loraplus", config_class=LoraPlusConfig, label="LoRA+",
    capabilities=Capabilities(mergeable=True, exact_unmerge=True, identity_at_init=True),
    implementation="peftlab.methods.loraplus.layer:LoraPlus", footprint=LoraFootprint,
    literature=Literature(5e-4, {"r": 16, "alpha": 32.0, "dropout": 0.1, "lr_ratio": 16.0},
                          "LoRA+ (Hayou et al. 2024): λ = η_B/η_A = 16, η_A about half LoRA's rate",
                          sweep=(2.5e-4, 5e-4, 1e-3)),
    paper="Hayou, Ghosh & Yu 2024, LoRA+: Efficient Low Rank Adaptation of Large Models, arXiv:2402.12354",
    # LoRA files: the grouping is a training matter, so a plain LoRA file stays `lora`; peftlab's own
    # files carry a "peftlab" block that says LoRA+ and its ratios.
    hf_peft_type="LORA", reads_plain_hf_files=False,
    choose=Path(__file__).with_name("choose.json"),
    variant_of="lora",
)
