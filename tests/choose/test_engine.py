"""choose(): memory fit and its fallbacks, storage budget, estimator agreement, determinism,
input validation, and the JSON schema."""

import json

import pytest

from peftlab.choose import SCHEMA, ChooseInputs, choose, load_rules, rank
from peftlab.errors import ConfigError
from peftlab.estimate import Settings, estimate


def test_same_inputs_same_recommendation():
    inputs = ChooseInputs(task="instruction-following", memory=24, examples=5000, num_tasks=3)
    first, second = choose(inputs), choose(ChooseInputs(**vars(inputs)))
    assert first == second
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())


def test_rule_table_is_not_mutated_by_evaluation():
    before = load_rules()
    for task in ("classification", "domain-adaptation"):
        rank(ChooseInputs(task=task, goal="max-quality", latency_critical=True))
    assert load_rules() == before


def test_numbers_are_the_estimators():
    rec = choose(ChooseInputs(task="classification", model="bert-base", batch_size=8, seq_len=128))
    lora = rec.best
    direct = estimate("bert-base", "lora", Settings(batch_size=8, seq_len=128, num_labels=2),
                      r=4, alpha=8, target_modules=("query", "value"), dropout=0.1)  # the rule's config
    assert lora.trainable_params == direct.trainable_params
    assert lora.training_memory_bytes == direct.memory.total
    assert lora.adapter_bytes == direct.file_bytes["float32"]


def test_lora_that_fits_stays_lora():
    rec = choose(ChooseInputs(task="instruction-following", memory=80))
    assert rec.best.method == "lora" and rec.best.fits is True and not rec.best.nf4


def test_lora_that_does_not_fit_falls_back_to_qlora():
    """source 000, General-Purpose 2: 'Use 4-bit QLoRA if you're GPU-memory constrained'."""
    inputs = ChooseInputs(task="instruction-following", memory=24)
    lora_needs = estimate("llama-2-7b", "lora", r=8, alpha=16,
                          target_modules=("q_proj", "k_proj", "v_proj", "o_proj")).memory.total
    assert lora_needs > 24e9
    best = choose(inputs).best
    assert best.method == "qlora" and best.nf4 and best.fits is True
    assert best.config["r"] == 8 and best.config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert "memory.qlora" in [r.rule for r in best.reasons]
    assert best.training_memory_bytes <= 24e9 < lora_needs


def test_fallback_checkpoints_before_cutting_rank():
    """source 000, Extreme Resource Constraints: gradient checkpointing and QLoRA r=8; checkpointing
    first because rank barely moves the memory (rules.json memory.checkpointing note)."""
    best = choose(ChooseInputs(task="domain-adaptation", memory=10)).best  # LoRA r=16, all-linear
    assert best.method == "qlora" and best.config["r"] == 16 and best.gradient_checkpointing
    assert [r.rule for r in best.reasons][-2:] == ["memory.qlora", "memory.checkpointing"]
    rec = choose(ChooseInputs(task="domain-adaptation", memory=5.9))
    assert "activations dominate" in rec.resolutions["memory.checkpointing"]
    best = rec.best
    assert best.config["r"] == 8 and best.config["alpha"] == 16 and best.fits is True
    assert [r.rule for r in best.reasons][-3:] == ["memory.qlora", "memory.checkpointing", "memory.qlora-r8"]


def test_nothing_fits_says_so_and_cites_the_seed():
    rec = choose(ChooseInputs(task="generation", memory=1))
    assert all(c.fits is False for c in rec.candidates)
    caution = rec.best.cautions[-1]
    assert caution.rule == "memory.exhausted" and "API-based" in caution.text


def test_candidate_that_does_not_fit_is_ranked_last():
    rec = choose(ChooseInputs(task="domain-adaptation", memory=40))
    assert rec.candidates[-1].method == "full" and rec.candidates[-1].fits is False
    assert [c.rank for c in rec.candidates] == [1, 2, 3]


def test_no_fit_check_on_cpu_or_unknown_memory():
    for memory in (None, "cpu"):
        assert all(c.fits is None for c in choose(ChooseInputs(task="generation", memory=memory)).candidates)


def test_storage_budget_demotes_large_adapters():
    rec = choose(ChooseInputs(task="generation", storage_mb=3))
    assert rec.best.method == "ia3" and rec.best.adapter_bytes <= 3e6
    over = [c for c in rec.candidates if c.adapter_bytes > 3e6]
    assert all(any(x.rule == "storage.exceeded" for x in c.cautions) for c in over)


def test_without_a_model_targets_stay_symbolic_and_no_numbers():
    best = choose(ChooseInputs(task="code-generation", model=None)).best
    assert best.config["target_modules"] == "qkvo" and best.trainable_params is None


def test_next_steps_from_the_seeds():
    steps = choose(ChooseInputs(task="generation")).best.next_steps
    assert "increase rank to 16 or 32" in steps["underfitting"][0].text
    assert [s.text for s in steps["overfitting"]][0] == "decrease rank to 4"


@pytest.mark.parametrize("field, value, words", [
    ("task", "summarize", "use one of: classification"),
    ("goal", "fast", "use one of: max-efficiency"),
    ("memory", "lots", "not a number of GB or 'cpu'"),
    ("memory", -1, "must be > 0"),
    ("examples", 0, "must be >= 1"),
    ("num_tasks", 0, "must be >= 1"),
    ("storage_mb", 0, "must be > 0"),
])
def test_invalid_inputs_name_the_value_and_the_fix(field, value, words):
    inputs = {"task": "generation", field: value}
    with pytest.raises(ConfigError, match=words):
        ChooseInputs(**inputs)


CANDIDATE_KEYS = {"rank": int, "method": str, "label": str, "config": dict, "config_source": str, "nf4": bool,
                  "merge": bool, "gradient_checkpointing": bool, "inference": str,
                  "reasons": list, "cautions": list, "trainable_params": int, "total_params": int,
                  "training_memory_bytes": int, "adapter_bytes": int, "fits": (bool, type(None)),
                  "next_steps": dict}


def test_json_schema():
    out = json.loads(json.dumps(choose(ChooseInputs(task="classification", memory=8)).to_dict()))
    assert out["schema"] == SCHEMA
    assert set(out) == {"schema", "inputs", "model", "candidates", "advice", "rules_fired", "resolutions"}
    assert out["inputs"]["task"] == "classification" and out["model"] == "llama-2-7b"
    for candidate in out["candidates"]:
        assert set(candidate) == set(CANDIDATE_KEYS)
        for key, kind in CANDIDATE_KEYS.items():
            assert isinstance(candidate[key], kind), key
        for reason in candidate["reasons"] + candidate["cautions"] + candidate["next_steps"]["underfitting"]:
            assert set(reason) == {"rule", "source", "text"}
        assert set(candidate["next_steps"]) == {"underfitting", "overfitting"}
