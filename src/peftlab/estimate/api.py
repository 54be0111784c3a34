"""`estimate()`: parameters, adapter file size and training memory for one model and method.

Pure Python and instant: everything follows from the `ModelShape` (`core/shapes.py`), the
method's declared `Footprint` (its package's `config.py`, found through the registry) and a
memory model (`memory.py`). A combination "a+b" is estimated as its parts together (`combined.py`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from peftlab.core.combination_config import CombinationConfig, make_config
from peftlab.core.config import MethodConfig
from peftlab.core.footprint import Footprint
from peftlab.core.registry import declaration
from peftlab.core.shapes import ModelShape
from peftlab.errors import ConfigError
from peftlab.estimate.combined import Combined
from peftlab.estimate.memory import MEMORY_MODELS, Memory, detailed_memory, per_device_memory, seed_memory
from peftlab.estimate.presets import model_shape

FILE_DTYPES = {"float32": 4, "bfloat16": 2}
# Parameter groups outside the transformer blocks: FSDP2's root unit, gathered for the whole step
# (model-level prompt / prefix parameters are there too).
ROOT_GROUPS = ("embeddings", "pooler", "pre_classifier", "head", "lm_head")


@dataclass(frozen=True)
class Settings:
    """How training runs: the memory model and the batch it is computed for."""

    memory_model: str = "detailed"
    batch_size: int = 4
    seq_len: int = 512
    precision: str = "bf16-mixed"
    attention: str = "eager"
    gradient_checkpointing: bool = False
    num_labels: int | None = None
    device: str = "cuda"
    processes: int = 1  # devices training together; batch_size is the global batch split over them
    fsdp: bool = False  # FSDP2 shards parameters, gradients and AdamW state over the processes

    def __post_init__(self):
        if self.memory_model not in MEMORY_MODELS:
            raise ConfigError(f"memory model {self.memory_model!r} is unknown; use one of: "
                              f"{', '.join(MEMORY_MODELS)}")
        for key in ("batch_size", "seq_len", "processes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} is invalid; it must be >= 1")
        if self.processes > 1 and self.memory_model == "seed":
            raise ConfigError("processes > 1 needs the detailed memory model: drop --memory-model seed")
        if self.num_labels is not None and self.num_labels < 1:
            raise ConfigError(f"num_labels={self.num_labels} is invalid; it must be >= 1")


@dataclass(frozen=True)
class Estimate:
    """One model × method: trainable parameters by module type and training memory (bytes)."""

    model: str
    method: dict
    settings: dict
    total_params: int
    trainable_params: int
    breakdown: dict[str, int]
    memory: Memory
    notes: tuple[str, ...] = ()

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of the base model (head included)."""
        return 100 * self.trainable_params / self.total_params

    @property
    def file_bytes(self) -> dict[str, int]:
        """Tensor bytes of the saved trainable parameters (file headers excluded)."""
        return {dtype: self.trainable_params * size for dtype, size in FILE_DTYPES.items()}

    def to_dict(self) -> dict:
        out = asdict(self)
        out["memory"] = self.memory.to_dict()
        out["notes"] = list(self.notes)
        return {**out, "percent": self.percent, "file_bytes": self.file_bytes}


def footprint_of(config: MethodConfig | CombinationConfig) -> Footprint:
    """The declared footprint of a method config (a combination: its parts together)."""
    if isinstance(config, CombinationConfig):
        return Combined(config, tuple(footprint_of(c.config) for c in config.components))
    return declaration(config.method).footprint(config)


def _notes(shape: ModelShape, method: Footprint, settings: Settings) -> tuple[str, ...]:
    notes = list(method.notes(shape))
    if shape.total_override is not None:
        notes.append(f"total parameters taken as {shape.total_override:,} (the source documents' model)")
    if settings.memory_model == "seed":
        notes.append("seed memory model: frozen weights 2 B, trainable weights 2 B, gradients "
                     "4 B, AdamW 8 B per parameter, activations B·T·d·2·4·L")
    return tuple(notes)


def estimate(model: str | Path | ModelShape, method: str | MethodConfig | CombinationConfig = "lora",
             settings: Settings | None = None, **hyperparams) -> Estimate:
    """Estimate `method` (a registered name or "a+b" plus its config fields, or a config) on `model`.

    >>> estimate("seed-7b", "lora", r=16, target_modules=("q_proj", "k_proj", "v_proj",
    ...          "o_proj")).trainable_params
    16777216
    """
    settings = settings or Settings()
    shape = model_shape(model)
    if isinstance(method, str):
        method = make_config(method, **hyperparams)
    elif hyperparams:
        raise ConfigError("pass hyperparameters either in the method config or as keywords")
    method = footprint_of(method)
    labels = settings.num_labels
    breakdown = method.breakdown(shape, labels)
    if shape.head_params(labels):
        breakdown["head"] = shape.head_params(labels)
    trainable = sum(breakdown.values())
    total = shape.total_params(labels)
    if settings.memory_model == "seed":
        memory = seed_memory(total, trainable, batch_size=settings.batch_size,
                             seq_len=settings.seq_len, hidden_dim=shape.hidden,
                             num_layers=shape.layers)
    else:
        rows = math.ceil(settings.batch_size / settings.processes)  # this device's share of the global batch
        memory = detailed_memory(shape, method, trainable=trainable,
                                 trained_base=method.trained_base(breakdown),
                                 num_labels=labels, batch_size=rows,
                                 seq_len=settings.seq_len, precision=settings.precision,
                                 attention=settings.attention,
                                 gradient_checkpointing=settings.gradient_checkpointing,
                                 device=settings.device,
                                 fused_head=not (settings.fsdp and settings.processes > 1))
        if settings.processes > 1:
            groups = shape.groups(labels)
            norm, per_block = shape.norm_params()
            root = sum(groups.get(key, 0) for key in ROOT_GROUPS) + groups["norms"] - norm * per_block * shape.layers
            trainable_root = sum(count for key, count in breakdown.items() if key in ROOT_GROUPS
                                 or key.startswith(("prompt", "prefix")))
            memory = per_device_memory(memory, shape, processes=settings.processes, fsdp=settings.fsdp,
                                       root_params=root, trainable_root=max(0, trainable_root),
                                       precision=settings.precision)
    return Estimate(shape.name, method.to_dict(), asdict(settings), total, trainable, breakdown,
                    memory, _notes(shape, method, settings))
