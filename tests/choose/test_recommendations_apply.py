"""Every recommended configuration is accepted by peftlab's method configs, its target modules
exist in the real architecture, and the trainable parameters `choose` reports (from
`peftlab.estimate`) equal those of the applied model.

The tiny BERT / GPT-2 / LLaMA configs are written as config.json, so `choose` estimates the
very models the test instantiates.
"""

import json

import pytest

import peftlab
from peftlab.choose import TASKS, ChooseInputs, choose
from tiny_models import bert_config, gpt2_config, llama_config, tiny_model

CONFIGS = {"bert": bert_config, "gpt2": gpt2_config, "llama": llama_config}
CASES = [(arch, task) for arch in CONFIGS for task in TASKS
         if arch != "bert" or task == "classification"]  # the tiny BERT is an encoder only


def config_json(tmp_path, arch):
    path = tmp_path / f"{arch}.json"
    path.write_text(json.dumps(CONFIGS[arch]().to_dict()))
    return str(path)


def apply(arch, task, candidate):
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in candidate.config.items()}
    kind = "classification" if task == "classification" else "causal-lm"
    return peftlab.apply(tiny_model(arch, kind), peftlab.make_config(candidate.method, **fields))


@pytest.mark.parametrize("arch, task", CASES, ids=[f"{a}-{t}" for a, t in CASES])
def test_recommended_configs_apply_and_match_the_estimate(tmp_path, arch, task):
    rec = choose(ChooseInputs(task=task, model=config_json(tmp_path, arch)))
    for candidate in rec.candidates:
        trainable, _ = apply(arch, task, candidate).count_parameters()
        assert trainable == candidate.trainable_params, candidate.method


def test_qlora_fallback_config_applies(tmp_path):
    rec = choose(ChooseInputs(task="generation", model=config_json(tmp_path, "llama"), memory=1e-6))
    qlora = next(c for c in rec.candidates if c.method == "qlora")
    trainable, _ = apply("llama", "generation", qlora).count_parameters()
    assert trainable == qlora.trainable_params
