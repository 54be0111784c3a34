"""Table-driven tests: every branch of source 003's decision tree, every row of its Quick Reference
and Task-Specific tables, and source 000's constraints, each written down here from the seed text
(independently of rules.json) and checked against `choose()`.

A final test checks that these cases together fire every rule of the table, so a rule added to
rules.json without a case here fails the suite.
"""

import pytest

from peftlab.core.registry import declarations

from peftlab.choose import ChooseInputs, choose, load_rules

QV = ["q_proj", "v_proj"]
QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
FIRED: set[str] = set()


def run(**inputs):
    rec = choose(ChooseInputs(**inputs))
    FIRED.update(rec.fired)
    return rec


def methods(rec):
    return [c.method for c in rec.candidates]


def assert_config(candidate, expected):
    for key, value in expected.items():
        actual = candidate.merge if key == "merge" else candidate.config[key]
        assert actual == value, f"{candidate.method}.{key}: {actual!r} != {value!r}"


# source 003, Decision Tree: (branch, inputs, first method, its config, the rule that decides)
DECISION_TREE = [
    ("latency critical -> LoRA (can merge weights)",
     dict(task="generation", latency_critical=True), "lora", {"merge": True}, "tree.latency"),
    ("compute extremely limited -> Prompt Tuning",
     dict(task="generation", memory="cpu"), "prompt", {"num_virtual_tokens": 20}, "tree.compute"),
    ("simple task (classification) -> Prompt Tuning or LoRA (r=4)",
     dict(task="classification"), "lora", {"r": 4, "alpha": 8}, "tree.simple-task"),
    ("combine multiple tasks -> Adapters",
     dict(task="generation", combine_tasks=True), "adapters", {"bottleneck_size": 64}, "tree.combine"),
    ("default -> LoRA (r=8, alpha=16)",
     dict(task="generation"), "lora", {"r": 8, "alpha": 16, "target_modules": QV}, "tree.default"),
]


@pytest.mark.parametrize("branch, inputs, first, config, rule", DECISION_TREE,
                         ids=[row[0] for row in DECISION_TREE])
def test_decision_tree_branch(branch, inputs, first, config, rule):
    rec = run(**inputs)
    assert rec.best.method == first
    assert_config(rec.best, config)
    assert rule in [r.rule for r in rec.best.reasons]
    assert any(r.source == "source 003, Decision Tree" for r in rec.best.reasons)


def test_decision_tree_is_first_match_in_seed_order():
    # latency is asked before compute: with both, LoRA (merged) wins and compute does not fire
    rec = run(task="classification", latency_critical=True, memory="cpu")
    assert rec.best.method == "lora" and "tree.compute" not in rec.fired
    # compute before the simple-task question: classification on a CPU starts with prompt tuning
    assert run(task="classification", memory="cpu").best.method == "prompt"


def test_simple_task_names_both_methods_lora_first():
    """source 003 says 'Prompt Tuning or LoRA (r=4)'; source 000's GLUE order puts LoRA first."""
    rec = run(task="classification")
    assert methods(rec)[:2] == ["lora", "prompt"]
    assert "tree.simple-task" in rec.resolutions


def test_compute_limited_prefers_prompt_over_seed_000_qlora():
    """source 000 (Extreme Resource Constraints) says QLoRA r=8; on a CPU source 003's prompt wins."""
    rec = run(task="instruction-following", memory="cpu")
    assert rec.best.method == "prompt" and "qlora" not in methods(rec)
    assert "QLoRA" in rec.resolutions["tree.compute"]


# source 003, Quick Reference: (need, first methods in order, config of the first)
QUICK_REFERENCE = [
    ("max-efficiency", ["prompt"], {"num_virtual_tokens": 20}),
    ("balance", ["lora"], {"r": 8, "alpha": 16}),
    ("max-quality", ["lora", "adapters"], {"r": 32, "alpha": 64, "target_modules": "all-linear"}),
    ("zero-overhead", ["lora"], {"merge": True}),
    ("quick-experiments", ["prompt", "ia3", "lora"], {}),
    ("production", ["lora"], {"merge": True}),
]


@pytest.mark.parametrize("goal, first, config", QUICK_REFERENCE, ids=[r[0] for r in QUICK_REFERENCE])
def test_quick_reference_row(goal, first, config):
    rec = run(task="generation", goal=goal)
    assert methods(rec)[:len(first)] == first
    assert_config(rec.best, config)
    assert rec.best.reasons[0].source == "source 003, Quick Reference"


def test_max_quality_high_rank_end_with_ample_data():
    """'LoRA with high rank': source 000 General-Purpose 3 (32-64); 64 once examples >= 10,000."""
    rec = run(task="generation", goal="max-quality", examples=50_000)
    assert_config(rec.best, {"r": 64, "alpha": 128})


# source 003, Task-Specific Recommendations (+ source 000's orders): task -> (methods in order,
# LoRA config with unknown data size, LoRA rank with >= 10,000 examples)
TASKS = [
    ("classification", ["lora", "prompt", "adapters", "ia3", "prefix"],
     {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": QV}, 4),
    # DoRA's own rule (its paper, Sec. 5) follows the source documents' rows.
    ("instruction-following", ["lora", "ia3", "prefix", "dora"], {"r": 8, "alpha": 16, "target_modules": QKVO}, 16),
    ("domain-adaptation", ["lora", "adapters", "full"], {"r": 16, "alpha": 32, "target_modules": "all-linear"}, 32),
    ("style-persona", ["lora", "prefix"], {"r": 8, "alpha": 16, "target_modules": QV}, 8),
    ("code-generation", ["lora", "adapters"], {"r": 8, "alpha": 16, "target_modules": QKVO}, 16),
    ("generation", ["lora", "adapters", "ia3", "prefix"], {"r": 8, "alpha": 16, "target_modules": QV}, 8),
]


@pytest.mark.parametrize("task, order, lora, large_r", TASKS, ids=[r[0] for r in TASKS])
def test_task_row(task, order, lora, large_r):
    rec = run(task=task)
    assert methods(rec) == order
    assert_config(rec.best, lora)
    assert f"task.{task}" in [r.rule for r in rec.best.reasons]
    assert run(task=task, examples=20_000).best.config["r"] == large_r


TARGETS = [("bert-base", ["query", "value"], ["query", "key", "value", "attention.output.dense"]),
           ("distilbert-base", ["q_lin", "v_lin"], ["q_lin", "k_lin", "v_lin", "out_lin"]),
           ("gpt2", ["c_attn"], ["c_attn", "attn.c_proj"]),
           ("llama-3.2-1b", QV, QKVO)]


@pytest.mark.parametrize("model, qv, qkvo", TARGETS, ids=[r[0] for r in TARGETS])
def test_target_modules_per_architecture(model, qv, qkvo):
    assert run(task="style-persona", model=model).best.config["target_modules"] == qv
    assert run(task="code-generation", model=model).best.config["target_modules"] == qkvo


# source 000's "When to use / Avoid ... when" constraints: (inputs, rule, check)
CONSTRAINTS = [
    (dict(task="classification", examples=500), "data.few-shot",
     lambda rec: "ia3" in methods(rec) and methods(rec)[-1] == "prompt"
     and rec.candidates[-1].cautions[0].source == "source 000, When to Use Prompt Tuning"),
    (dict(task="generation", num_tasks=5000), "serving.multi-tenant", lambda rec: "prompt" in methods(rec)),
    (dict(task="domain-adaptation", latency_critical=True), "latency.avoid-overhead",
     lambda rec: methods(rec) == ["lora", "full", "adapters"]),
    (dict(task="classification", goal="max-quality"), "quality.avoid-small",
     lambda rec: set(methods(rec)[-2:]) == {"ia3", "prompt"}),
    (dict(task="code-generation", goal="production"), "production.avoid-adapters",
     lambda rec: methods(rec)[-1] == "adapters"),
]


@pytest.mark.parametrize("inputs, rule, check", CONSTRAINTS, ids=[r[1] for r in CONSTRAINTS])
def test_constraint_row(inputs, rule, check):
    rec = run(**inputs)
    assert rule in rec.fired
    assert check(rec)


def test_production_keeps_adapters_when_tasks_combine():
    rec = run(task="code-generation", goal="production", combine_tasks=True)
    assert "production.avoid-adapters" not in rec.fired


# source 003, Summary (Factor -> Recommendation): (factor, inputs, first methods in order, LoRA rank)
SUMMARY = [
    ("simple task + low compute -> Prompt Tuning", dict(task="classification", memory="cpu"), ["prompt"], None),
    ("general purpose -> LoRA (r=8)", dict(task="generation"), ["lora"], 8),
    ("complex task -> LoRA (r=16+) or Adapters", dict(task="code-generation", examples=20_000),
     ["lora", "adapters"], 16),
    ("zero latency overhead -> LoRA (merged)", dict(task="code-generation", latency_critical=True), ["lora"], 8),
    ("multi-task -> Adapters or multiple LoRAs", dict(task="generation", combine_tasks=True),
     ["adapters", "lora"], 8),
]


@pytest.mark.parametrize("factor, inputs, first, r", SUMMARY, ids=[row[0] for row in SUMMARY])
def test_summary_row(factor, inputs, first, r):
    rec = run(**inputs)
    assert methods(rec)[:len(first)] == first
    if r is not None:
        assert next(c for c in rec.candidates if c.method == "lora").config["r"] == r


# source 003, Common Pitfalls: (mistake, check that choose() avoids it)
PITFALLS = [
    ("starting with full FT", lambda: all(run(task=t).best.method != "full" for t, *_ in TASKS)),
    ("rank too high: start low", lambda: run(task="domain-adaptation").best.config["r"] == 16),
    ("wrong target modules: start with Q+V", lambda: run(task="generation").best.config["target_modules"] == QV),
    ("ignoring inference: adapters add latency",
     lambda: methods(run(task="code-generation", latency_critical=True))[-1] == "adapters"),
    ("one-size-fits-all: tune per task", lambda: "advice.per-task" in run(task="generation").fired),
]


@pytest.mark.parametrize("mistake, avoided", PITFALLS, ids=[row[0] for row in PITFALLS])
def test_pitfall_avoided(mistake, avoided):
    assert avoided()


# source 003, Inference Overhead ("Can Merge?") and source 000, Inference Impact (IA³ folds)
MERGEABLE = [("lora", True), ("qlora", True), ("ia3", True), ("adapters", False), ("prefix", False),
             ("prompt", False)]


@pytest.mark.parametrize("method, mergeable", MERGEABLE, ids=[m for m, _ in MERGEABLE])
def test_inference_overhead_row(method, mergeable):
    info = load_rules()["methods"][method]
    assert info["mergeable"] is mergeable
    assert info["latency_overhead"] is (method in ("adapters", "prefix"))


ADVICE = [
    (dict(task="generation", latency_critical=True), "advice.merge"),
    (dict(task="generation", latency_critical=True, num_tasks=4), "advice.multi-tenant"),
    (dict(task="generation", combine_tasks=True), "advice.combine-interference"),
    (dict(task="domain-adaptation"), "advice.domain-pretraining"),
    (dict(task="generation"), "advice.per-task"),
]


@pytest.mark.parametrize("inputs, rule", ADVICE, ids=[r[1] for r in ADVICE])
def test_advice_row(inputs, rule):
    assert rule in [a.rule for a in run(**inputs).advice]


def test_one_task_merges_several_tasks_do_not():
    one = run(task="generation", latency_critical=True)
    assert "advice.multi-tenant" not in one.fired and one.best.merge
    several = run(task="generation", latency_critical=True, num_tasks=4)
    assert "advice.merge" not in several.fired and not several.best.merge


def test_every_rule_of_the_table_is_exercised_by_a_case_above():
    for row in DECISION_TREE:
        run(**row[1])
    for goal, *_ in QUICK_REFERENCE:
        run(task="generation", goal=goal)
    for task, *_ in TASKS:
        run(task=task)
    for inputs, *_ in CONSTRAINTS + ADVICE:
        run(**inputs)
    missing = {rule["id"] for rule in load_rules()["rules"]} - FIRED
    assert not missing, f"rules without a table-driven case: {sorted(missing)}"


def test_every_reason_cites_a_seed_section_or_a_methods_own_paper():
    table = load_rules()
    cited = [rule["source"] for rule in table["rules"]]
    cited += [f["source"] for f in table["memory_fallbacks"]]
    cited += [s["source"] for steps in table["next_steps"].values() for kind in steps.values() for s in kind]
    papers = tuple(f"{d.label} (" for d in declarations() if d.paper)  # "DoRA (Liu et al. 2024, ...)"
    uncited = [source for source in cited if not source.startswith(("source 000, ", "source 003, ", *papers))]
    assert not uncited, uncited
