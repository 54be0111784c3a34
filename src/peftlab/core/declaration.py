"""What a method declares about itself, torch-free: the one place everything else reads.

    MethodDeclaration(name="lora", config_class=LoraConfig, capabilities=Capabilities(...),
                      implementation="peftlab.methods.lora.layer:Lora", footprint=LoraFootprint,
                      literature=Literature(1e-3, {"r": 16, ...}, "Hu et al. 2021 ...", sweep=(5e-4, 1e-3, 2e-3)),
                      label="LoRA", hf_peft_type="LORA")

The estimator counts with `footprint`, `peftlab compare` plans and sweeps with `literature`,
`peftlab choose` labels and checks merges with `label` and `capabilities`, the CLI builds its
options from `config_class`, and the core applies the method through `implementation` (imported
on first use, so reading a declaration never loads torch). Adding a method is its package plus
one line in `peftlab/methods/__init__.py`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftlab.core.config import MethodConfig

if TYPE_CHECKING:  # the footprint protocol sits beside the model shapes
    from peftlab.core.footprint import Footprint


@dataclass(frozen=True)
class Capabilities:
    """What a method can do; shared code and the conformance suite branch on these, not on names.

    mergeable:          the learned change can be folded into the base weights (zero inference overhead).
    exact_unmerge:      unmerge restores the weights to float tolerance (IA³ divides, so it only reports).
    identity_at_init:   a fresh adapter leaves the model's outputs unchanged (B = 0, scales = 1, ...).
    model_hook:         the method changes the model's inputs or attention context (prefix, prompt).
    supports_disable:   the base model can be recovered by switching the adapter off.
    separate_delta:     the learned change is held apart from the base weights; full fine-tuning
                        trains the weights themselves, so merging it has nothing to fold.
    """

    mergeable: bool
    exact_unmerge: bool
    identity_at_init: bool
    model_hook: bool = False
    supports_disable: bool = True
    separate_delta: bool = True

    def as_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Literature:
    """A method's published defaults: the learning rate and settings it is known to work with, the
    learning-rate grid `peftlab compare --tune-lr` searches around it, and where they come from."""

    learning_rate: float
    fields: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    sweep: tuple[float, ...] = ()


@dataclass(frozen=True)
class MethodDeclaration:
    """Everything about a method that is not its tensors (see the module docstring).

    implementation: "module:Class" of its `peftlab.core.protocol.Method` (the torch side).
    hf_peft_type: `peft_type` of its Hugging Face PEFT file format, or None where there is none.
    hf_file_fields: adapter_config.json fields that tell a plain HF file of `hf_peft_type` apart as
        this method ({"use_dora": True}); the declaration matching most of them reads the file.
    reads_plain_hf_files: whether a file without a "peftlab" block may load as this method (QLoRA
        writes LoRA files but needs its block to know the quantization, so it says False).
    paper: the citation `peftlab choose` and the docs give.
    choose: the method's `peftlab choose` data (a JSON file in its package: its recipe and
        inference cost, next steps, and the rules that cite its paper), or None.
    needs: architecture features the method relies on (`core/architectures.py`), checked before
        it is applied: prefix tuning needs "kv_cache".
    variant_of: the method this one is a variant of (same layers, another initialisation or
        optimizer grouping); `peftlab compare` runs variants only when asked for by name.
    """

    name: str
    config_class: type[MethodConfig]
    capabilities: Capabilities
    implementation: str
    footprint: type["Footprint"]
    literature: Literature
    label: str
    paper: str = ""
    hf_peft_type: str | None = None
    hf_file_fields: Mapping[str, Any] = field(default_factory=dict)
    reads_plain_hf_files: bool = True
    choose: Path | None = None
    needs: tuple[str, ...] = ()
    variant_of: str | None = None

    def __post_init__(self) -> None:
        if self.config_class.method != self.name:
            raise ValueError(f"declaration {self.name!r}: its config class {self.config_class.__name__} "
                             f"says method {self.config_class.method!r}")

    def load(self):
        """The method's implementation class (imports torch and the method's modules)."""
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)

    def matches_hf_file(self, fields: Mapping[str, Any]) -> int | None:
        """How many of `hf_file_fields` a plain HF file's `fields` match (None: not this method's file)."""
        if not self.reads_plain_hf_files or fields.get("peft_type") != self.hf_peft_type:
            return None
        for key, wanted in self.hf_file_fields.items():
            value = fields.get(key)
            if not (wanted(value) if callable(wanted) else value == wanted):
                return None
        return len(self.hf_file_fields)
