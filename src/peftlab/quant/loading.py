"""Whole models in NF4: quantize the frozen linears in place, or load them straight into 4-bit.

Which layers: by default every linear layer inside the transformer blocks (``nn.Linear``, GPT-2's
``Conv1D``), never the embeddings, the output head or a classifier; or the layers a target
specification names (``peftlab.core.targets`` syntax).

Loading into 4-bit builds the model with its parameters on the ``meta`` device (no memory), then
reads the checkpoint one tensor at a time (plain reads, see ``_Checkpoint``): each linear weight is quantized and only
its ``Linear4bit`` is kept, every other tensor is materialized as read. Peak memory is the final
model plus one float layer, not the float32 model::

    meta model ──► for each quantized path:  read W (float, one layer) ──► Linear4bit ──► free W
               └─► for every other tensor:   read it into place; tie the head; init what is new
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from peftlab.core.protocol import AdapterLayer
from peftlab.core.targets import CLASSIFIER_HEAD_NAMES, find_targets, layer_index, output_head_paths, replace_module
from peftlab.errors import PeftlabError, TargetError
from peftlab.io import tensor_problem
from peftlab.quant.codebook import DEFAULT_BLOCK_SIZE
from peftlab.quant.linear4bit import Linear4bit


def _is_float_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def _inside_adapter(path: str, adapter_paths: Sequence[str]) -> bool:
    """True for modules an adapter layer owns (its A/B, bottleneck, ...), not its wrapped base."""
    return any(path.startswith(a + ".") and not path.startswith(a + ".base_layer") for a in adapter_paths)


def quantizable_paths(model: nn.Module, modules: str | Sequence[str] | None = None) -> list[str]:
    """Paths of the float linear layers to quantize; None = every linear in the transformer blocks."""
    heads = output_head_paths(model) | {n for n, _ in model.named_children() if n in CLASSIFIER_HEAD_NAMES}
    adapters = [p for p, m in model.named_modules() if isinstance(m, AdapterLayer)]
    if modules is None:
        paths = [p for p, m in model.named_modules() if _is_float_linear(m) and layer_index(p) is not None]
    else:
        paths = find_targets(model, modules, accepts=_is_float_linear, method="qlora quantize_modules")
    in_head = [p for p in paths if any(p == h or p.startswith(h + ".") for h in heads)]
    if in_head:
        raise TargetError(f"quantize_modules selects the output head {in_head[0]!r}: the head stays float "
                          "(it is tied to the embeddings or trains)")
    return [p for p in paths if not _inside_adapter(p, adapters)]


def quantize_model(model: nn.Module, modules: str | Sequence[str] | None = None, *,
                   block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True,
                   compute_dtype: torch.dtype = torch.float32) -> list[str]:
    """Replace the selected float linears of `model` by ``Linear4bit`` in place; return their paths."""
    paths = quantizable_paths(model, modules)
    for path in paths:
        layer = Linear4bit.from_linear(model.get_submodule(path), block_size=block_size,
                                       double_quant=double_quant, compute_dtype=compute_dtype)
        replace_module(model, path, layer)
    return paths


def dequantize_model(model: nn.Module) -> list[str]:
    """Replace every ``Linear4bit`` of `model` by its float layer (``to_float_layer``); return paths."""
    paths = [p for p, m in model.named_modules() if isinstance(m, Linear4bit)]
    for path in paths:
        replace_module(model, path, model.get_submodule(path).to_float_layer())
    return paths


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter created inside goes to the meta device; buffers (rotary tables) stay real."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


log = logging.getLogger(__name__)

# Every dtype a safetensors header may name, with its size in bytes; only float ones load as weights.
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


class _CorruptFile(PeftlabError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; the file is damaged or not a safetensors file: copy or save the model "
                         "again")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_safetensors_header(path: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """(data start, {key: header entry}) of a safetensors file, checked as safetensors' own reader does:
    the header length within bounds and the file, JSON entries with a known dtype, a shape of
    counts and byte offsets whose size fits dtype × shape, laid end to end over the whole data."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _CorruptFile(path, f"{size} bytes is too short for a safetensors header")
        length = struct.unpack("<Q", prefix)[0]  # safetensors: u64 header length, then a JSON header
        if not 0 < length <= min(_MAX_HEADER, size - 8):
            raise _CorruptFile(path, f"its header length {length} does not fit a file of {size} bytes")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise _CorruptFile(path, f"its header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise _CorruptFile(path, "its header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise _CorruptFile(path, "its __metadata__ is not an object of strings")
    end_of_data = size - 8 - length
    position = 0
    for key, entry in sorted(header.items(), key=lambda item: _start(item[1])):
        if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) \
                or entry["dtype"] not in _SAFETENSORS_DTYPES:
            raise _CorruptFile(path, f"tensor {key!r} has no known dtype")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise _CorruptFile(path, f"tensor {key!r} has shape {shape!r}, not a list of counts")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
            raise _CorruptFile(path, f"tensor {key!r} has data_offsets {offsets!r}, not [start, end]")
        start, stop = offsets
        itemsize = _SAFETENSORS_DTYPES[entry["dtype"]].itemsize
        if stop - start != math.prod(shape) * itemsize:
            raise _CorruptFile(path, f"tensor {key!r} has {stop - start} bytes, {entry['dtype']} {shape} needs "
                                     f"{math.prod(shape) * itemsize}")
        if start != position:
            raise _CorruptFile(path, f"tensor {key!r} starts at byte {start}, the previous one ends at {position}")
        if stop > end_of_data:
            raise _CorruptFile(path, f"tensor {key!r} ends at data byte {stop}, past the {end_of_data} the file holds "
                                     "(the file was cut short)")
        position = stop
    if position != end_of_data:
        raise _CorruptFile(path, f"its tensors cover {position} of {end_of_data} data bytes (the file was cut "
                                 "short or extended)")
    return 8 + length, header


def _start(entry: Any) -> tuple[int, int]:
    """(start, end) offsets of a header entry, for ordering (malformed entries first, to be refused)."""
    try:
        start, stop = entry["data_offsets"]
        return (start, stop) if _is_count(start) and _is_count(stop) else (-1, -1)
    except (TypeError, KeyError, ValueError):
        return (-1, -1)


def _shard_files(folder: Path, index: Path) -> list[str]:
    """The files an index's weight_map names, each a file name inside `folder`."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise _CorruptFile(index, f"it has no weight_map of file names ({error})") from None
    for name in names:
        if not isinstance(name, str) or "/" in name or "\\" in name or name in ("", ".", "..") \
                or not (folder / name).resolve().is_relative_to(folder.resolve()):
            raise _CorruptFile(index, f"it names {name!r}, which is not a file inside {folder}")
        if not (folder / name).is_file():
            raise _CorruptFile(index, f"it names {name}, which is missing")
    return names


class _Checkpoint:
    """The tensors of a model folder (one safetensors file or an indexed set), read one at a time.

    Tensors are read with plain file reads into fresh memory rather than through a memory map: a
    mapping's touched pages count in the process's resident memory until it is unmapped, which
    would add the float checkpoint back to the peak this loader exists to avoid.
    Every file's header is checked when the folder is opened (`read_safetensors_header`), so a
    cut-short file is refused before the model is built; a tensor read must be floating point
    and finite. Checkpoint keys may carry the base-model prefix (``bert.encoder...``) or not
    (``encoder...``): `key_for` maps a model path to whichever the files use.
    """

    def __init__(self, folder: Path, prefix: str) -> None:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = _shard_files(folder, index)
        elif (folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise PeftlabError(f"{folder} has no model.safetensors: loading into 4-bit reads safetensors files")
        self.entries: dict[str, tuple[Path, int, dict]] = {}  # key -> (file, data start, header entry)
        for name in files:
            data_start, header = read_safetensors_header(folder / name)
            self.entries.update({key: (folder / name, data_start, entry) for key, entry in header.items()})
        self.prefix = prefix

    def key_for(self, path: str) -> str | None:
        bare = path.removeprefix(self.prefix + ".") if self.prefix else path
        for key in (path, bare, f"{self.prefix}.{path}"):
            if key in self.entries:
                return key
        return None

    def read(self, key: str) -> torch.Tensor:
        """Tensor `key` (header-checked offsets), refused unless floating point and finite."""
        path, data_start, entry = self.entries[key]
        start, stop = entry["data_offsets"]
        tensor = torch.empty(entry["shape"], dtype=_SAFETENSORS_DTYPES[entry["dtype"]])
        with open(path, "rb") as handle:
            handle.seek(data_start + start)
            got = handle.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) if stop > start else 0
        if got != stop - start:
            raise _CorruptFile(path, f"tensor {key!r} ends after {got} of its {stop - start} bytes")
        problem = tensor_problem({key: tensor})
        if problem:
            raise _CorruptFile(path, problem)
        return tensor

    def read_for(self, path: str, shape: torch.Size) -> torch.Tensor:
        """The checkpoint tensor of model parameter `path`, which must be there with `shape`."""
        key = self.key_for(path)
        if key is None or self.entries[key][2]["shape"] != list(shape):
            found = "no tensor" if key is None else f"shape {tuple(self.entries[key][2]['shape'])}"
            raise PeftlabError(f"the model files have {found} for {path} {tuple(shape)}: they belong to another "
                               "architecture; load the folder the model's config.json came with")
        return self.read(key)


def load_quantized(folder: str | Path, model_class, config, *, modules: str | Sequence[str] | None = None,
                   block_size: int = DEFAULT_BLOCK_SIZE, double_quant: bool = True,
                   compute_dtype: torch.dtype = torch.float32) -> tuple[nn.Module, list[str]]:
    """Build ``model_class.from_config(config)`` from the safetensors in `folder`, linears in NF4.

    Returns (model in eval mode, paths of the parameters the checkpoint lacked and that were
    freshly initialised, e.g. a new classification head). The result equals loading in float and
    then ``quantize_model`` with the same options, bit for bit.
    """
    from transformers.initialization import no_init_weights

    with no_init_weights(), _parameters_on_meta():
        # Auto classes build with `from_config`, concrete model classes with `_from_config`.
        model = (getattr(model_class, "from_config", None) or model_class._from_config)(config)
    checkpoint = _Checkpoint(Path(folder), getattr(model, "base_model_prefix", ""))
    for path in quantizable_paths(model, modules):
        layer = model.get_submodule(path)
        weight = checkpoint.read_for(f"{path}.weight", layer.weight.shape)  # the one float layer in memory
        bias = None if layer.bias is None else checkpoint.read_for(f"{path}.bias", layer.bias.shape)
        replace_module(model, path, Linear4bit.from_weight(
            weight.t() if isinstance(layer, Conv1D) else weight, bias, block_size=block_size,
            double_quant=double_quant, compute_dtype=compute_dtype, from_conv1d=isinstance(layer, Conv1D)))
        del weight
    for name, param in model.named_parameters():
        key = checkpoint.key_for(name)
        if key is not None and checkpoint.entries[key][2]["shape"] != list(param.shape):
            log.warning("%s: the saved %s does not fit %s: initialised afresh (train it)", folder, key,
                        tuple(param.shape))  # a classifier head for another number of labels
        elif param.device.type == "meta" and key is not None:
            owner_path, _, attr = name.rpartition(".")
            owner = model.get_submodule(owner_path)
            owner._parameters[attr] = nn.Parameter(checkpoint.read(key).to(param.dtype))
    model.tie_weights()
    new = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    for owner_path in sorted({name.rpartition(".")[0] for name in new}):
        owner = model.get_submodule(owner_path)
        owner.to_empty(device="cpu", recurse=False)
        model._init_weights(owner)  # the architecture's own initialisation, as from_pretrained does
    return model.eval(), new


def load_model_4bit(name_or_path: str, kind: str, *, num_labels: int | None = None,
                    modules: str | Sequence[str] | None = None, block_size: int = DEFAULT_BLOCK_SIZE,
                    double_quant: bool = True, compute_dtype: torch.dtype = torch.float32):
    """``peftlab.models.load_model`` with the linears loaded straight into NF4 (a ``LoadedModel``).

    GGUF models are read from their cached safetensors conversion (made once by ``load_model``'s
    resolver). The tokenizer is set up exactly as ``load_model`` does.
    """
    from transformers import AutoConfig, AutoTokenizer

    from peftlab.models.loading import (_MODEL_CLASSES, KINDS, LoadedModel, _quiet_transformers, resolve_model_folder,
                                        share_pad_token)

    if kind not in KINDS:
        raise PeftlabError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    folder = resolve_model_folder(name_or_path)
    extra = {"num_labels": num_labels} if kind == "classification" and num_labels is not None else {}
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True, **extra)
        model, new = load_quantized(folder, _MODEL_CLASSES[kind], config, modules=modules, block_size=block_size,
                                    double_quant=double_quant, compute_dtype=compute_dtype)
    share_pad_token(model, tokenizer)
    return LoadedModel(model, tokenizer, name_or_path, str(folder), kind, tuple(new))
