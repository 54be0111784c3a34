"""`peftlab compare` on a generation task: a tiny LLaMA causal LM on rows of the embedded E2E subset.

The model is random, so the scores are near zero; what is checked is that every method runs the
causal-LM path (loss on target tokens, greedy decoding, BLEU / ROUGE-L over grouped references)
and that the report and results carry the generation metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from train_helpers import minilm_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from peftlab.compare import make_plan, run_compare

E2E = Path(__file__).parents[2] / "src" / "peftlab" / "data" / "embedded"
TINY = dict(steps=2, batch_size=4, max_length=48, eval_batch_size=8, timing_steps=1,
            timing_min_rounds=2, timing_seconds=2.0, lr_choice="literature", latency_batch=2, latency_reps=1, max_new_tokens=4, max_dev_prompts=3)


def _write_model(folder: Path) -> Path:
    tokenizer = minilm_tokenizer()
    tokenizer.eos_token = "[SEP]"  # a WordPiece tokenizer as a causal LM's: [SEP] ends a target
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=48, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.cls_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _write_data(folder: Path) -> Path:
    """The first 24 training rows and the rows of the first dev meaning representations, as JSONL."""
    folder.mkdir(parents=True)
    for split, keep in (("train", 24), ("dev", 20)):
        with open(E2E / f"e2e_{split}.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))[:keep]
        lines = [json.dumps({"prompt": row["mr"], "target": row["ref"]}) for row in rows]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare-causal")
    model, data = _write_model(root / "model"), _write_data(root / "data")
    plan = make_plan(model=str(model), data=str(data), methods="lora,prefix", threads=1)
    plan = dataclasses.replace(plan, budget=dataclasses.replace(plan.budget, **TINY))
    return run_compare(plan, root / "out", progress=False, command="peftlab compare (test)"), root / "out"


def test_every_method_is_scored_by_generation(compared):
    results, _ = compared
    assert results["run_info"]["task"]["kind"] == "causal-lm"
    for record in results["methods"]:
        assert record["error"] is None, record["error"]
        quality = record["measurements"]["quality"]
        dev = quality["dev"]
        assert dev["prompts"] == 3 and 0.0 <= dev["bleu"] <= 100.0 and 0.0 <= dev["rouge_l"] <= 100.0
        assert dev["perplexity"] > 1.0 and quality["samples"] and "output" in quality["samples"][0]
        assert quality["metric"] in ("bleu", "rouge_l", "loss")


def test_the_report_shows_generation_metrics(compared):
    from peftlab.compare.figures import quality_value

    results, out = compared
    lora = results["methods"][0]
    assert quality_value(lora) == lora["measurements"]["quality"]["dev"]["rouge_l"]  # a percentage already
    report = (out / "report.md").read_text()
    assert "| method | learning rate | rouge_l |" in report and "| bleu | perplexity |" in report


def test_generation_is_judged_against_the_untrained_model_with_intervals_per_prompt(compared):
    results, _ = compared
    quality = results["quality"]
    assert quality["metric"] == "rouge_l" and "zero-shot" in quality["baseline"]["name"]
    for record in results["methods"]:
        found = record["measurements"]["quality"]
        assert set(found["intervals"]) == {"rouge_l", "bleu", "perplexity"}
        for metric, interval in found["intervals"].items():
            assert interval["ci"][0] <= interval["value"] <= interval["ci"][1], metric
        run = found["runs"][0]
        assert len(run["per_prompt"]["outputs"]) == 3 and len(run["per_prompt"]["bleu_statistics"][0]) == 10
        assert found["learned"] in (True, False)
