"""`peftlab train --method qlora` loads its base straight into NF4 (`Method.load_base`).

The float loader is never called, the model that trains holds `Linear4bit` block linears, and the
trained adapter equals the one trained on the float-load-then-quantize path.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import minilm_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

import peftlab.models
import peftlab.models.loading
import peftlab.train
from peftlab.cli.main import app
from peftlab.cli.train import _load_base
from peftlab.core.combination_config import CombinationConfig, Component
from peftlab.core.protocol import Method
from peftlab.errors import ConfigError
from peftlab.methods.qlora import QLoraConfig
from peftlab.methods.qlora.layer import QLora
from peftlab.quant import Linear4bit

ROWS = [("name[Aromi], food[Chinese]", "Aromi serves Chinese food."),
        ("name[Bibimbap], area[riverside]", "Bibimbap is by the riverside."),
        ("name[Cotto], priceRange[cheap]", "Cotto is cheap."),
        ("name[Zizzi], customer rating[high]", "Zizzi is rated highly.")]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A tiny LLaMA causal LM (MiniLM's WordPiece tokenizer) and a few prompt/target rows."""
    root = tmp_path_factory.mktemp("qlora-load")
    tokenizer = minilm_tokenizer()
    tokenizer.eos_token = "[SEP]"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.cls_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    (root / "data").mkdir()
    for split in ("train", "dev"):
        lines = [json.dumps({"prompt": p, "target": t}) for p, t in ROWS * (3 if split == "train" else 1)]
        (root / "data" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def train_qlora(paths, out, monkeypatch):
    """Run `peftlab train --method qlora`; return (the trained adapter's tensors, the trained model's layers)."""
    seen = {}
    original = peftlab.train.train

    def spy(peft_model, *args, **kwargs):
        seen["layers"] = [type(m) for p, m in peft_model.model.named_modules()  # the blocks' base modules
                          if ".layers." in p and ".lora_" not in p]
        return original(peft_model, *args, **kwargs)

    monkeypatch.setattr(peftlab.train, "train", spy)
    result = CliRunner().invoke(app, ["train", "--method", "qlora", "--model", str(paths / "model"),
                                      "--data", str(paths / "data"), "--out", str(out), "--steps", "3",
                                      "--batch-size", "4", "--max-length", "24", "--r", "4", "--lr", "1e-2",
                                      "--set", "block_size=32", "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    return load_file(str(out / "adapter_model.safetensors")), seen["layers"]


def test_qlora_trains_on_a_base_loaded_into_nf4_like_the_float_path(paths, tmp_path, monkeypatch):
    def no_float_load(*args, **kwargs):
        raise AssertionError("the float loader was called")

    with monkeypatch.context() as patch:
        patch.setattr(peftlab.models, "load_model", no_float_load)
        patch.setattr(peftlab.models.loading, "load_model", no_float_load)
        direct, layers = train_qlora(paths, tmp_path / "direct", patch)
    assert layers.count(Linear4bit) == 2 * 7 and torch.nn.Linear not in layers  # q k v o gate up down, 2 blocks
    with monkeypatch.context() as patch:
        patch.setattr(QLora, "load_base", Method.load_base)  # load in float, then prepare_base quantizes
        quantized_after, layers_after = train_qlora(paths, tmp_path / "float", patch)
    assert layers_after.count(Linear4bit) == 2 * 7
    assert direct.keys() == quantized_after.keys() and direct
    for key, value in direct.items():
        assert (value - quantized_after[key]).abs().max() <= 1e-6, key


def test_prepare_base_leaves_a_4bit_base_as_it_is(paths):
    config = QLoraConfig(r=4, block_size=32, quantize_modules=("q_proj", "v_proj"))
    loaded = QLora().load_base(str(paths / "model"), "causal-lm", None, config)
    before = {p: m for p, m in loaded.model.named_modules() if isinstance(m, Linear4bit)}
    assert len(before) == 4
    QLora().prepare_base(loaded.model, config)
    after = {p: m for p, m in loaded.model.named_modules() if isinstance(m, Linear4bit)}
    assert after.keys() == before.keys() and all(after[p] is before[p] for p in before)


def test_two_parts_with_their_own_loaders_are_refused(paths):
    class Task:
        kind, num_labels = "causal-lm", None

    both = CombinationConfig((Component("a", QLoraConfig(target_modules=("q_proj",))),
                              Component("b", QLoraConfig(target_modules=("v_proj",)))))
    with pytest.raises(ConfigError, match="both load the base model their own way"):
        _load_base(str(paths / "model"), Task(), both)


def test_eval_loads_a_qlora_adapters_base_into_nf4_and_scores_like_the_float_path(paths, tmp_path, monkeypatch):
    train_qlora(paths, tmp_path / "run", monkeypatch)

    def evaluate(patch):
        result = CliRunner().invoke(app, ["eval", str(tmp_path / "run"), "--model", str(paths / "model"),
                                          "--data", str(paths / "data"), "--max-length", "24", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    def no_float_load(*args, **kwargs):
        raise AssertionError("the float loader was called")

    with monkeypatch.context() as patch:
        patch.setattr(peftlab.models, "load_model", no_float_load)
        patch.setattr(peftlab.models.loading, "load_model", no_float_load)
        direct = evaluate(patch)
    with monkeypatch.context() as patch:
        patch.setattr(QLora, "load_base", Method.load_base)  # load in float, then prepare_base quantizes
        float_path = evaluate(patch)
    assert direct["loss"] == pytest.approx(float_path["loss"], abs=1e-6) and direct["loss"] > 0
