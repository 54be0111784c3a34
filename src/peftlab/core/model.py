"""`PeftModel`: a base model plus named adapters, with one set of verbs for every method.

    base model ──apply──▶ PeftModel(model)            adapters: {"default": LoraConfig, ...}
                          ├─ adapter layers           wrap base modules in place (paths unchanged)
                          ├─ base params to train     e.g. biases, or everything for full FT
                          ├─ modules_to_save copies   e.g. the classification head
                          └─ model hooks              e.g. soft prompts, prefixes

Trainable parameters, freezing, state dicts, merge and unmerge all derive from what those four
declare. Merging is explicit (`merge()` / `unmerge()`); nothing happens in `train()` / `eval()`.

Several methods can form one unit (`CombinationConfig`, see `core/combination.py`): its parts are
ordinary adapters "<name>:<component>", and the combination's name stands for all of them. A
forward pass can give each row its own adapters (`adapter_names=`, see `core/row_selection.py`).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from peftlab.core import combination as combo
from peftlab.core.architectures import missing_features
from peftlab.core.combination_config import CombinationConfig, part_name
from peftlab.core.config import MethodConfig
from peftlab.core.modules_to_save import ModulesToSave
from peftlab.core.protocol import AdapterLayer, ModelHook
from peftlab.core.registry import method_for_config
from peftlab.core.row_selection import selected_rows
from peftlab.core.targets import CLASSIFIER_HEAD_NAMES, _matches, file_path, replace_module, visible_modules
from peftlab.errors import ConfigError, MergeError, TargetError


def model_parameter_count(module: nn.Module) -> int:
    """The parameters `module` has as a model, however they are stored: a quantized linear (one that
    declares `is_quantized_linear`, e.g. NF4) keeps its weight as packed codes in buffers, and
    counts as the out × in values it stands for, so a 4-bit model has as many parameters as the
    float one it was made from."""
    stored = sum(p.numel() for p in module.parameters())
    return stored + sum(m.out_features * m.in_features for m in module.modules()
                        if getattr(m, "is_quantized_linear", False))


class PeftModel(nn.Module):
    """A model with named adapters. Build it with `peftlab.apply` or `peftlab.load`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.configs: dict[str, MethodConfig] = {}
        self.combinations: dict[str, CombinationConfig] = {}
        self.hooks = nn.ModuleDict()
        self.active_adapters: tuple[str, ...] = ()
        self._disabled = False
        self.sharded = False  # set when FSDP shards the model over processes (`peftlab.train.distributed`)

    # --- introspection ---------------------------------------------------------------------------
    @property
    def config(self):
        """The base model's Hugging Face config (so code written for HF models keeps working)."""
        return self.model.config

    def adapter_layers(self, name: str | None = None) -> Iterator[tuple[str, AdapterLayer]]:
        """(path, layer) of every adapter layer, or of those carrying adapter `name`."""
        for path, module in self.model.named_modules():
            if isinstance(module, AdapterLayer) and (name is None or name in module.adapter_names):
                yield path, module

    def method(self, name: str):
        """The method of adapter `name`; for a combination, a `CombinedMethod` with derived capabilities."""
        if name in self.combinations:
            config = self.combinations[name]
            return combo.CombinedMethod(config.method, tuple(method_for_config(c.config).capabilities
                                                             for c in config.components))
        return method_for_config(self.configs[name])

    def parts(self, name: str) -> tuple[str, ...]:
        """The adapters a name stands for: a combination's parts, or the adapter itself."""
        if name in self.combinations:
            return tuple(part_name(name, c.name) for c in self.combinations[name].components)
        return (name,)

    def expand(self, names: Sequence[str]) -> list[str]:
        """`names` with every combination replaced by its parts (order kept, no repeats)."""
        return list(dict.fromkeys(part for name in names for part in self.parts(name)))

    def units(self, names: Sequence[str]) -> list[str]:
        """`names` with the parts of a combination replaced by its name where all of them are present."""
        present, units = set(names), []
        for name in names:
            owner = next((c for c in self.combinations if name in self.parts(c)
                          and set(self.parts(c)) <= present), name)
            if owner not in units:
                units.append(owner)
        return units

    def base_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters of the base model that its forward pass uses, by their base-model path."""
        adapter_ids = {id(p) for _, layer in self.adapter_layers() for n in layer.adapter_names
                       for p in layer.adapter_params(n).values()}
        shadowed = {id(p) for _, layer in self.adapter_layers() if isinstance(layer, ModulesToSave)
                    for p in layer.base_layer.parameters()}
        return {file_path(path): p for path, p in self.model.named_parameters()
                if id(p) not in adapter_ids and id(p) not in shadowed}

    def module_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Tensors of adapter `name` that belong to modules (layers, head copies, base params)."""
        params: dict[str, nn.Parameter] = {}
        for path, layer in self.adapter_layers(name):
            for key, param in layer.adapter_params(name).items():
                params[f"{file_path(path)}.{key}"] = param
        params.update(self.method(name).base_parameters_to_train(self, name, self.configs[name]))
        return params

    def adapter_parameters(self, name: str) -> dict[str, nn.Parameter]:
        """Every tensor adapter `name` trains: module-level ones by path, then the hook's own."""
        if name in self.combinations:
            return {key: p for part in self.parts(name) for key, p in self.adapter_parameters(part).items()}
        params = self.module_parameters(name)
        if name in self.hooks:
            params.update(self.hooks[name].adapter_params())
        return params

    def _trainable_entries(self) -> list[tuple[str, str, nn.Parameter]]:
        """(optimizer key, owning adapter, tensor) for every distinct tensor of the active adapters.

        The key is the tensor's adapter-file key, unless two active adapters hold distinct tensors
        under it (two LoRAs on the same modules both have "<path>.lora_A.weight"): then each of
        those becomes "<adapter>/<key>" ("/" occurs in no module path). A tensor several adapters
        share (a base bias both unfreeze) appears once, under the first active adapter that has it.
        A single active adapter therefore keeps its file keys (checkpoints written before stay loadable).
        """
        owned: list[tuple[str, str, nn.Parameter]] = []
        seen: set[int] = set()
        for name in self.active_adapters:
            for key, param in self.adapter_parameters(name).items():
                if id(param) not in seen:
                    seen.add(id(param))
                    owned.append((key, name, param))
        uses = Counter(key for key, _, _ in owned)
        return [(key if uses[key] == 1 else f"{name}/{key}", name, param) for key, name, param in owned]

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters an optimizer should see: every distinct tensor of the active adapters,
        under a key no other tensor has (see `_trainable_entries`)."""
        return {key: param for key, _, param in self._trainable_entries()}

    def learning_rate_scales(self) -> dict[str, float]:
        """Per trainable parameter (keys of `trainable_parameters()`), its learning rate relative to
        the run's: a combination component's `lr_scale` times what the adapter's method declares
        for the tensor (`Method.learning_rate_scales`, e.g. LoRA+'s B), 1.0 for everything else."""
        entries = self._trainable_entries()
        declared: dict[int, float] = {}
        for name in dict.fromkeys(name for _, name, _ in entries):
            params = self.adapter_parameters(name)
            scales = self.method(name).learning_rate_scales(self, name, self.configs[name], params)
            declared.update({id(params[key]): scale for key, scale in scales.items()})
        return {key: combo.lr_scale(self, name) * declared.get(id(param), 1.0) for key, name, param in entries}

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts; total counts the base model (see
        `model_parameter_count`) and all adapters."""
        trainable = sum(p.numel() for p in self.trainable_parameters().values())
        return trainable, model_parameter_count(self)

    # --- adapters --------------------------------------------------------------------------------
    def add_adapter(self, name: str, config: MethodConfig | CombinationConfig, *,
                    activate: bool = True) -> None:
        """Attach a new adapter `name` configured by `config` (the method comes from the config);
        a `CombinationConfig` attaches all its components as one unit named `name`.

        The config kept in `configs[name]` is the resolved one (`Method.resolve`: default targets
        filled in from the architecture table), so files name the modules actually adapted."""
        if isinstance(config, CombinationConfig):
            combo.add_combination(self, name, config, activate=activate)
            return
        if name in self.configs or name in self.combinations:
            raise ConfigError(f"adapter {name!r} exists already: choose another name or delete_adapter({name!r})")
        if not name or "." in name:
            raise ConfigError(f"adapter name {name!r} is invalid: use a non-empty name without dots")
        method = method_for_config(config)
        lacking = missing_features(self.model, method.declaration.needs)
        if lacking:
            raise TargetError(f"{method.name} needs {', '.join(lacking)}, which {type(self.model).__name__} "
                              f"(model_type {self.model.config.model_type!r}) does not have: choose another method")
        config = method.resolve(self.model, config)
        method.prepare_base(self.model, config)
        method.inject(self.model, name, config)
        self._wrap_modules_to_save(name, config)
        hook = method.make_hook(self.model, name, config)
        if hook is not None:
            self.hooks[name] = hook
        self.configs[name] = config
        if activate:
            self.set_active([name])
        else:
            self.set_active(self.active_adapters)

    def _wrap_modules_to_save(self, name: str, config: MethodConfig) -> None:
        entries = CLASSIFIER_HEAD_NAMES if config.modules_to_save is None else config.modules_to_save
        modules = visible_modules(self.model)  # a wrapper's base_layer or copies are not the module itself
        for entry in entries:
            paths = [p for p in modules if _matches(p, entry)]
            # The standard head names are optional (BERT has no "score", GPT-2 no "classifier").
            if not paths and entry not in CLASSIFIER_HEAD_NAMES:
                raise ConfigError(f"modules_to_save entry {entry!r} matches no module of {type(self.model).__name__}")
            for path in paths:
                module = self.model.get_submodule(path)
                if isinstance(module, AdapterLayer) and not isinstance(module, ModulesToSave):
                    raise ConfigError(f"{path} carries an adapter layer and cannot also be in modules_to_save")
                wrapper = module if isinstance(module, ModulesToSave) else ModulesToSave(module)
                if wrapper is not module:
                    replace_module(self.model, path, wrapper)
                wrapper.add_adapter(name, config)

    def set_active(self, names: str | Sequence[str]) -> None:
        """Make `names` the active adapters (their contributions add up) and freeze everything else."""
        names = (names,) if isinstance(names, str) else tuple(names)
        names = tuple(self.expand(names))
        unknown = [n for n in names if n not in self.configs]
        if unknown:
            raise ConfigError(f"unknown adapter(s) {unknown}: existing adapters are {list(self.configs)}")
        self.active_adapters = names
        for _, layer in self.adapter_layers():
            layer.active_adapters = tuple(n for n in names if n in layer.adapter_names)
        self._refresh_requires_grad()

    def _refresh_requires_grad(self) -> None:
        for param in self.parameters():
            param.requires_grad_(False)
        for param in self.trainable_parameters().values():
            param.requires_grad_(True)

    def delete_adapter(self, name: str) -> None:
        """Remove adapter `name` (a combination: all its parts; a part: the combination stays
        as plain adapters for the other parts)."""
        if name in self.combinations:
            parts = self.parts(name)
            del self.combinations[name]
            for part in parts:
                self.delete_adapter(part)
            return
        owner = next((c for c in self.combinations if name in self.parts(c)), None)
        if owner is not None:
            del self.combinations[owner]
        if name not in self.configs:
            raise ConfigError(f"unknown adapter {name!r}: existing adapters are {list(self.configs)}")
        for path, layer in list(self.adapter_layers(name)):
            layer.delete_adapter(name)
            if not layer.adapter_names:
                replace_module(self.model, path, layer.base_layer)
        if name in self.hooks:
            del self.hooks[name]
        del self.configs[name]
        self.set_active([n for n in self.active_adapters if n != name])

    @contextlib.contextmanager
    def disable_adapters(self) -> Iterator[None]:
        """Run the base model alone inside the block (merged adapters must be unmerged first)."""
        for name in self.active_adapters:
            if not self.method(name).capabilities.supports_disable:
                raise ConfigError(f"adapter {name!r} ({self.configs[name].method}) changes the base weights "
                                  "themselves and cannot be disabled; reload the base model instead")
        merged = self.merged_adapters()
        if merged:
            raise ConfigError(f"adapters {merged} are merged into the weights: call unmerge() before disabling")
        layers = [layer for _, layer in self.adapter_layers()]
        self._disabled = True
        for layer in layers:
            layer.disabled = True
        try:
            yield
        finally:
            self._disabled = False
            for layer in layers:
                layer.disabled = False

    # --- merging ---------------------------------------------------------------------------------
    def merged_adapters(self) -> list[str]:
        return sorted({n for _, layer in self.adapter_layers() for n in layer.merged_adapters})

    def merge(self, names: Sequence[str] | None = None, *, safe: bool = False) -> None:
        """Fold adapters (default: the active ones) into the base weights; merging twice is a no-op.

        With `safe`, each merged weight is computed in a copy and checked for NaN/inf first; on a
        failure every layer merged by this call is unmerged again and MergeError is raised.
        """
        if self.sharded:
            raise MergeError("cannot merge a model sharded over processes (FSDP): each rank holds a slice of the "
                             "base weights; save the adapter and merge it in one process (peftlab merge)")
        names = self.expand(self.active_adapters if names is None else names)
        for name in names:
            capabilities = self.method(name).capabilities
            if not capabilities.mergeable:
                raise MergeError(f"adapter {name!r} ({self.configs[name].method}) cannot be merged: "
                                 "its computation is not a change of the base weights")
        for name in names:
            for _, layer in self.adapter_layers(name):
                self._untie_weights_of(layer)
        done: list[tuple[AdapterLayer, str]] = []
        try:
            for name in names:
                for _, layer in self.adapter_layers(name):
                    if name not in layer.merged_adapters:
                        layer.merge(name, safe=safe)
                        layer.merged_adapters.append(name)
                        done.append((layer, name))
        except MergeError:
            for layer, name in reversed(done):
                layer.unmerge(name)
                layer.merged_adapters.remove(name)
            raise

    def _untie_weights_of(self, layer: AdapterLayer) -> None:
        """Give other users of `layer`'s base weight their own copy before it changes.

        GPT-2 and many decoders tie the output head to the token embedding: merging a LoRA of the
        embedding into the shared tensor would silently change the head as well.
        """
        weight = getattr(layer.base_layer, "weight", None)
        if not isinstance(weight, nn.Parameter):
            return
        for module in self.model.modules():
            if module is not layer.base_layer and getattr(module, "weight", None) is weight:
                module.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
                if getattr(self.model.config, "tie_word_embeddings", False):
                    self.model.config.tie_word_embeddings = False

    def unmerge(self, names: Sequence[str] | None = None) -> None:
        """Take merged adapters (default: all merged) back out of the weights; idempotent."""
        wanted = None if names is None else set(self.expand(names))
        for _, layer in self.adapter_layers():
            for name in reversed(list(layer.merged_adapters)):
                if wanted is None or name in wanted:
                    layer.unmerge(name)
                    layer.merged_adapters.remove(name)

    def merge_and_unload(self, *, safe: bool = False) -> nn.Module:
        """Merge the active adapters and return the plain base model with the result in its weights."""
        self.merge(safe=safe)
        for path, layer in sorted(self.adapter_layers(), key=lambda item: -item[0].count(".")):
            replace_module(self.model, path, layer.unload())
        for param in self.model.parameters():
            param.requires_grad_(False)
        return self.model

    # --- running ---------------------------------------------------------------------------------
    def active_hooks(self) -> list[ModelHook]:
        if self._disabled:
            return []
        return [self.hooks[n] for n in self.active_adapters if n in self.hooks]

    def forward(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> Any:
        """The model's forward with the active adapters; `adapter_names` (one adapter or combination
        name per row, "__base__" for none) instead gives each row its own (see `core/row_selection`)."""
        if adapter_names is not None:
            with selected_rows(self, adapter_names):
                return self.model(*args, **kwargs)
        hooks = self.active_hooks()
        if hooks and args:  # hooks edit keyword arguments: name the positional input_ids
            kwargs, args = {"input_ids": args[0], **kwargs}, args[1:]
        for hook in hooks:
            kwargs = hook.before_forward(self.model, kwargs)
        outputs = self.model(*args, **kwargs)
        for hook in reversed(hooks):
            outputs = hook.after_forward(outputs, kwargs)
        return outputs

    def generate(self, *args: Any, adapter_names: Sequence[str] | None = None, **kwargs: Any) -> torch.Tensor:
        if adapter_names is not None:  # one name per row; beam search, which widens the batch, is refused
            with selected_rows(self, adapter_names):
                return self.model.generate(*args, **kwargs)
        hooks = self.active_hooks()
        if hooks and args:
            kwargs, args = {"input_ids": args[0], **kwargs}, args[1:]
        for hook in hooks:
            kwargs = hook.before_generate(self.model, kwargs)
        outputs = self.model.generate(*args, **kwargs)
        for hook in reversed(hooks):
            outputs = hook.after_generate(outputs, kwargs)
        return outputs
