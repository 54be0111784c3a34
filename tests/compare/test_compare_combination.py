"""`peftlab compare --methods lora,lora+prompt`: combinations planned and measured like methods."""

from __future__ import annotations

import dataclasses

import pytest
from train_helpers import write_tiny_model, write_toy_data

import peftlab
from peftlab.compare import make_plan, run_compare
from peftlab.compare.plan import method_plan
from peftlab.compare.runs import method_config
from peftlab.core.registry import declaration
from peftlab.core.combination_files import MANIFEST_NAME
from peftlab.errors import ConfigError

TINY = dict(steps=3, batch_size=8, max_length=16, eval_batch_size=16, timing_steps=1,
            timing_min_rounds=2, timing_seconds=2.0, lr_choice="literature", latency_batch=4, latency_reps=1)


def test_a_combination_is_planned_from_its_parts_literature_defaults():
    plan = method_plan("lora+prompt")
    lora, prompt = declaration("lora").literature, declaration("prompt").literature
    assert plan.learning_rate == lora.learning_rate
    assert plan.fields["lora"] == lora.fields and plan.fields["prompt"] == prompt.fields
    assert plan.fields["lr_scales"] == {"prompt": pytest.approx(prompt.learning_rate / 1e-3)}
    config = method_config(plan)
    assert isinstance(config, peftlab.CombinationConfig) and config.method == "lora+prompt"
    lora, prompt = config.components
    assert lora.config.r == 16 and prompt.config.num_virtual_tokens == 20
    assert lora.lr_scale == 1.0 and prompt.lr_scale == pytest.approx(300.0)
    with pytest.raises(ConfigError, match="unknown method.*nope"):
        make_plan(methods="lora,lora+nope")
    with pytest.raises(ConfigError, match="names a method twice"):
        make_plan(methods="lora+lora")


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-combination")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=48, dev=16)
    plan = make_plan(model=str(model), data=str(data), methods="lora,lora+prompt", threads=1)
    plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, **TINY))
    out = root / "out"
    return run_compare(plan, out, progress=False, keep_adapters=True, command="peftlab compare (test)"), out


def test_the_combination_trains_is_timed_and_saved_as_one_unit(compared):
    results, out = compared
    records = {r["method"]: r for r in results["methods"]}
    assert list(records) == ["lora", "lora+prompt"]
    for record in records.values():
        assert record["error"] is None, record["error"]
    measured = {name: r["measurements"] for name, r in records.items()}
    combined = measured["lora+prompt"]
    prompt = 20 * 32  # 20 virtual tokens of the tiny BERT's width 32; the head trains once, with LoRA
    assert combined["params"]["trainable"] == measured["lora"]["params"]["trainable"] + prompt
    assert combined["step_time"]["median_ms"] > 0 and combined["merge_error"] is None  # prompt cannot merge
    assert 0.0 <= combined["quality"]["value"] <= 1.0
    folder = out / "adapters" / "lora+prompt"
    assert (folder / MANIFEST_NAME).is_file() and (folder / "lora").is_dir() and (folder / "prompt").is_dir()
    assert records["lora+prompt"]["config"]["fields"]["lr_scales"] == {"prompt": pytest.approx(300.0)}
