"""Target matching: exact names, suffixes, regex, all-linear, exclusions, layers, and its errors."""

from __future__ import annotations

import pytest

from peftlab.core.targets import find_targets, layer_index
from peftlab.errors import TargetError
from tiny_models import tiny_model


@pytest.fixture(scope="module")
def bert():
    return tiny_model("bert")


def test_suffix_names_match_every_layer(bert):
    assert find_targets(bert, ["query", "value"]) == [
        "bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value",
    ]


def test_dotted_suffix_and_exact_path(bert):
    assert find_targets(bert, [".attention.output.dense"]) == [
        "bert.encoder.layer.0.attention.output.dense", "bert.encoder.layer.1.attention.output.dense"]
    assert find_targets(bert, ["bert.encoder.layer.1.intermediate.dense"]) == ["bert.encoder.layer.1.intermediate.dense"]


def test_output_dense_suffix_does_not_match_attention_output_dense_by_accident(bert):
    # "output.dense" is a suffix of both; the user gets both, as in Hugging Face PEFT.
    paths = find_targets(bert, ["output.dense"])
    assert "bert.encoder.layer.0.output.dense" in paths and "bert.encoder.layer.0.attention.output.dense" in paths


def test_regex_string_is_a_full_match(bert):
    assert find_targets(bert, r".*layer\.1\.attention\.self\.(query|key)") == [
        "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.key"]
    assert find_targets(bert, ["re:.*\\.0\\.attention\\.self\\.key"]) == ["bert.encoder.layer.0.attention.self.key"]


def test_all_linear_excludes_the_output_head():
    for arch, task, head in (("bert", "classification", "classifier"), ("gpt2", "causal-lm", "lm_head"),
                             ("llama", "classification", "score")):
        model = tiny_model(arch, task)
        paths = find_targets(model, "all-linear")
        assert head not in paths
        assert len(paths) >= 8


def test_all_linear_counts_for_llama():
    paths = find_targets(tiny_model("llama", "causal-lm"), "all-linear")
    assert len(paths) == 2 * 7  # q, k, v, o, gate, up, down per layer


def test_exclusions_and_layer_indices(bert):
    paths = find_targets(bert, ["query", "key", "value"], exclude=["key"], layers=[1])
    assert paths == ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value"]
    assert layer_index("model.layers.12.self_attn.q_proj") == 12
    assert layer_index("transformer.h.3.attn.c_attn") == 3


def test_unknown_target_lists_what_was_asked_and_the_candidates(bert):
    with pytest.raises(TargetError) as error:
        find_targets(bert, ["query", "q_proj"], method="lora")
    message = str(error.value)
    assert "'q_proj'" in message and "attention.self.query" in message and "intermediate.dense" in message
    assert "\n" not in message


def test_nothing_left_after_exclusion_is_an_error(bert):
    with pytest.raises(TargetError, match="no module matched"):
        find_targets(bert, ["query"], exclude=["query"])


def test_module_of_a_type_the_method_cannot_wrap(bert):
    with pytest.raises(TargetError, match="LayerNorm"):
        find_targets(bert, ["attention.output.LayerNorm"])
