"""Training a peftlab model inside `transformers.Trainer` or TRL's `SFTTrainer`: one call.

    from peftlab.integrations.transformers import for_trainer
    model = peftlab.apply(base, peftlab.LoraConfig(r=16, alpha=32))       # any method or combination
    trainer = Trainer(model=for_trainer(model), args=TrainingArguments(...), train_dataset=...)
    trainer.train()              # checkpoint-N/: adapter_config.json + adapter_model.safetensors
    trainer.save_model("out")    # the same Hugging Face PEFT folder: `peftlab eval out`, HF PEFT load it

`for_trainer` wraps a `PeftModel` in a `TrainerModel`, which is what the Trainer expects of a
model and nothing more:

    Trainer asks                              TrainerModel answers
    forward signature (columns, label names)  the base model's own forward signature
    activation_checkpointing_enable(...)      the base model's, plus input embeddings that require
                                              grad (the frozen embedding would cut the graph)
    save_pretrained(dir) on save / checkpoint the adapter in the Hugging Face PEFT layout, plus
                                              model.safetensors with the same trainable tensors
                                              under this module's names, which is the file
                                              Trainer reads back on resume_from_checkpoint
    load_state_dict(state, strict=False)      fills the trainable tensors; the frozen base is not
                                              a missing key (it is never saved)
    a new forward (TRL's fused LM head)       installed on the Hugging Face model inside, where TRL
                                              says it belongs, so peftlab's model-level hooks
                                              (prompt, prefix) still run around it

Only parameters the adapters declare train: the Trainer's optimizer takes those that require
grad, and the PeftModel froze all others. `make_optimizer` adds what the Trainer cannot know, a
combination's per-part learning-rate scales (pass `optimizers=(make_optimizer(model, args), None)`).

`TrainerModel` is a `PreTrainedModel` because the Trainer calls `save_pretrained` on nothing
else (any other module's checkpoint is its whole state dict, which also fails on tied weights);
its `__init__` is `nn.Module`'s, since `PreTrainedModel.__init__` would resolve the attention
implementation again on the config this model shares with the base.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedModel

from peftlab.core.adapter_io import save_adapter
from peftlab.core.model import PeftModel
from peftlab.core.protocol import AdapterLayer
from peftlab.errors import ConfigError, PeftlabError
from peftlab.train.runtime import activation_checkpointing

TRAINER_WEIGHTS_NAME = "model.safetensors"  # transformers' SAFE_WEIGHTS_NAME, read back on resume
_CLASSES: dict[type, type] = {}


class TrainerModel(PreTrainedModel):
    """A `PeftModel` as `transformers.Trainer` and TRL's trainers expect a model to behave.

    Build it with `for_trainer(peft_model)`; `peft_model` stays usable (same tensors).
    """

    def __init__(self, peft_model: PeftModel) -> None:
        nn.Module.__init__(self)  # not PreTrainedModel.__init__: see the module docstring
        self.peft_model = peft_model
        self.config = peft_model.config

    # --- what Trainer reads -------------------------------------------------------------------------
    @property
    def base(self) -> nn.Module:
        """The Hugging Face model inside (with the adapter layers in it)."""
        return self.peft_model.model

    @property
    def generation_config(self):
        return getattr(self.base, "generation_config", None)

    @property
    def main_input_name(self) -> str:
        return getattr(self.base, "main_input_name", "input_ids")

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.base, "supports_gradient_checkpointing", False))

    def get_input_embeddings(self) -> nn.Module:
        return self.base.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module | None:
        return self.base.get_output_embeddings()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The PeftModel's forward (hooks, then the base model); `for_trainer` gives the subclass
        the base model's signature, which the Trainer reads to keep dataset columns and labels."""
        return self.peft_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.peft_model.generate(*args, **kwargs)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict | None = None,
                                        **kwargs: Any) -> None:
        if not self.supports_gradient_checkpointing:
            raise ConfigError(f"{type(self.base).__name__} does not support gradient checkpointing")
        activation_checkpointing(self.base, True, activation_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        activation_checkpointing(self.base, False)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any) -> None:
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.activation_checkpointing_disable()

    # --- state: what trains ----------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The active adapters' tensors under this module's parameter names."""
        trainable = {id(p) for p in self.peft_model.trainable_parameters().values()}
        return {name: p.detach() for name, p in self.named_parameters() if id(p) in trainable}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load trainable tensors (a `trainable_state()`); with `strict`, all of them and only them.

        The frozen base never appears in a checkpoint, so it is not reported missing."""
        expected = set(self.trainable_state())
        unexpected = sorted(set(state_dict) - expected)
        missing = sorted(expected - set(state_dict))
        if strict and (unexpected or missing):
            raise PeftlabError(f"trainer checkpoint does not match the adapters: missing {missing[:4]}, "
                               f"unexpected {unexpected[:4]}; resume with the model it was written from")
        result = super().load_state_dict({k: v for k, v in state_dict.items() if k in expected},
                                         strict=False, assign=assign)
        return type(result)(missing, unexpected)

    def save_pretrained(self, save_directory: str | Path, is_main_process: bool = True,
                        state_dict: dict | None = None, **_: Any) -> None:
        """Write the active adapter (a combination: all its parts) in the Hugging Face PEFT layout,
        and `model.safetensors` with `trainable_state()` for the Trainer's resume.

        `state_dict`, which Trainer passes only when it gathered a sharded model, must then be a
        `trainable_state()`."""
        if not is_main_process:
            return
        folder = Path(save_directory)
        units = self.peft_model.units(self.peft_model.active_adapters)
        if len(units) != 1:
            raise PeftlabError(f"{len(units)} adapters are active ({', '.join(units)}): a trainer checkpoint holds "
                               "one adapter or one combination; set_active() the one you train")
        save_adapter(self.peft_model, folder, units[0])
        tensors = self.trainable_state() if state_dict is None else state_dict
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / TRAINER_WEIGHTS_NAME),
                  metadata={"format": "pt"})

    def tie_weights(self, *args: Any, **kwargs: Any) -> None:
        """The base keeps its own ties; nothing here is a tied weight."""

    # --- TRL's fused LM head ---------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name == "forward" and _is_fused_lm_head(value):
            self._install_fused_head(value.__func__)
            return
        super().__setattr__(name, value)  # other wrappers (accelerate's autocast) wrap this forward

    def _install_fused_head(self, function: Any) -> None:
        """TRL's `SFTTrainer` swaps the forward of the model it is given for one that, asked for
        `fused_lm_head=True`, runs the model's backbone and LM head itself. Here that would skip
        peftlab's hooks, so the same head goes onto the Hugging Face model inside (as TRL advises:
        "add the head before wrapping the model with PEFT"), built with the options TRL chose;
        this model's forward then passes `fused_lm_head=True` through the hooks to it."""
        from trl.trainer.utils import add_fused_lm_head

        if isinstance(self.get_output_embeddings(), AdapterLayer):
            raise ConfigError("TRL's fused LM head reads lm_head.weight directly and would skip the adapter on "
                              "lm_head: leave lm_head out of target_modules under SFTTrainer")
        chosen = inspect.getclosurevars(function).nonlocals
        options = {key: chosen[key] for key in ("temperature", "cast_lm_head_to_fp32", "outputs") if key in chosen}
        add_fused_lm_head(self.base, **options)


def _is_fused_lm_head(forward: Any) -> bool:
    """Whether `forward` is the bound forward TRL's `add_fused_lm_head` builds."""
    function = getattr(forward, "__func__", None)
    return function is not None and function.__code__.co_name == "_fused_forward" \
        and "trl" in Path(function.__code__.co_filename).parts


def for_trainer(peft_model: PeftModel) -> TrainerModel:
    """`peft_model` as a model for `transformers.Trainer` / TRL's `SFTTrainer` (see the module doc).

    The returned module's class is a `TrainerModel` subclass whose `forward` carries the base
    model's signature (the Trainer drops dataset columns the forward does not name, and finds
    the label names there)."""
    if not isinstance(peft_model, PeftModel):
        raise ConfigError(f"for_trainer takes a peftlab PeftModel (from peftlab.apply), not {type(peft_model).__name__}")
    if not peft_model.active_adapters:
        raise ConfigError("the model has no active adapter to train: peftlab.apply(...) one first")
    base_class = type(peft_model.model)
    cls = _CLASSES.get(base_class)
    if cls is None:
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.peft_model(*args, **kwargs)

        forward.__signature__ = inspect.signature(base_class.forward)
        forward.__doc__ = TrainerModel.forward.__doc__
        cls = _CLASSES[base_class] = type(f"Trainer{base_class.__name__}", (TrainerModel,), {"forward": forward})
    return cls(peft_model)


def make_optimizer(model: TrainerModel, args) -> torch.optim.AdamW:
    """AdamW over the trainable tensors with a combination's per-part learning-rate scales, at
    `args.learning_rate` and `args.weight_decay` (decay on matrices only, as `peftlab train`).

    For `Trainer(..., optimizers=(make_optimizer(model, args), None))`: the Trainer's own
    optimizer trains every part at one rate."""
    from peftlab.train.config import TrainConfig
    from peftlab.train.schedule import make_optimizer as peftlab_optimizer

    peft_model = model.peft_model
    config = TrainConfig(learning_rate=args.learning_rate, weight_decay=args.weight_decay)
    return peftlab_optimizer(peft_model.trainable_parameters(), config, peft_model.learning_rate_scales())
