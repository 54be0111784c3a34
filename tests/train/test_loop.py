"""The training loop on a tiny BERT (real MiniLM tokenizer) and a tiny GPT-2 (word tokenizer)."""

import json

import peftlab
import pytest
import torch
from tiny_models import tiny_model
from tokenizers import Tokenizer, models, pre_tokenizers
from train_helpers import minilm_tokenizer, tiny_bert, toy_task
from transformers import PreTrainedTokenizerFast

from peftlab.data.tasks import CausalLMExample, Task
from peftlab.train import TrainConfig, TrainingDivergedError, evaluate, train

FAST = dict(num_threads=1, log_every=5, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def task():
    return toy_task(train=96, dev=32)


def lora(seed=0, **changes):
    torch.manual_seed(seed)
    config = peftlab.LoraConfig(r=4, alpha=8, target_modules=("query", "value"), **changes)
    return peftlab.apply(tiny_bert(seed=0), config)


def test_full_fine_tuning_learns_the_toy_task(task, tokenizer):
    model = peftlab.apply(tiny_bert(), peftlab.FullConfig())
    before = evaluate(model, task, tokenizer)
    result = train(model, task, tokenizer, TrainConfig(learning_rate=1e-2, epochs=6, batch_size=16, **FAST),
                   progress=False)
    assert result.history[-1]["loss"] < result.history[0]["loss"] - 0.2
    assert result.final_metrics["loss"] < before["loss"] - 0.2
    assert result.final_metrics["accuracy"] >= 0.9
    assert result.steps == 36 and result.examples_seen == 6 * 96
    assert result.step_time["median"] > 0 and result.peak_rss_mb > 0


def test_same_seed_gives_the_same_adapter_and_another_seed_does_not(task, tokenizer):
    config = TrainConfig(learning_rate=1e-2, max_steps=4, batch_size=8, **FAST)
    runs = []
    for seed in (0, 0, 1):
        model = lora(seed=seed, dropout=0.1)
        train(model, task, tokenizer, config.replace(seed=seed), progress=False)
        runs.append({k: p.detach().clone() for k, p in model.trainable_parameters().items()})
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_only_adapter_parameters_change(task, tokenizer):
    model = lora()
    base = {k: p.detach().clone() for k, p in model.base_parameters().items()}
    adapter = {k: p.detach().clone() for k, p in model.trainable_parameters().items()}
    train(model, task, tokenizer, TrainConfig(learning_rate=1e-2, max_steps=3, batch_size=8, **FAST), progress=False)
    assert all(torch.equal(p, base[k]) for k, p in model.base_parameters().items())
    changed = {k for k, p in model.trainable_parameters().items() if not torch.equal(p, adapter[k])}
    assert any(k.endswith("lora_B.weight") for k in changed) and "classifier.weight" in changed


def _trained(model, task, tokenizer, **changes):
    config = TrainConfig(learning_rate=1e-2, max_steps=3, **FAST).replace(**changes)
    train(model, task, tokenizer, config, progress=False)
    return {k: p.detach().clone() for k, p in model.trainable_parameters().items()}


def test_gradient_accumulation_equals_the_large_batch(task, tokenizer):
    accumulated = _trained(lora(), task, tokenizer, batch_size=8, grad_accum=3)
    large = _trained(lora(), task, tokenizer, batch_size=24)
    for key in large:
        torch.testing.assert_close(accumulated[key], large[key], atol=1e-5, rtol=1e-4)


WORDS = "name eat type food price area near the a is an in of with serves cheap food restaurant".split()


def word_tokenizer():
    vocabulary = ["<unk>", "<s>", "</s>"] + WORDS
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def causal_task():
    """Rows with targets of different lengths, so micro-batches hold different token counts."""
    import random

    rng = random.Random(0)

    def example():
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        return CausalLMExample(prompt, " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 9))))

    dev = tuple(example() for _ in range(6))
    return Task("toy-lm", "causal-lm", tuple(example() for _ in range(24)), dev + dev[:2])


def test_causal_lm_accumulation_weights_micro_batches_by_target_tokens():
    task, tokenizer = causal_task(), word_tokenizer()

    def run(**changes):
        torch.manual_seed(0)
        model = peftlab.apply(tiny_model("gpt2", "causal-lm"), peftlab.LoraConfig(r=4, target_modules=("c_attn",)))
        return _trained(model, task, tokenizer, **changes)

    accumulated, large = run(batch_size=2, grad_accum=4), run(batch_size=8)
    # Adam divides by sqrt(v): a gradient element near zero turns float32 summation-order noise into
    # ~1e-5 of weight (1.2e-5 seen on one CPU), against updates of ~1e-2 a step at this rate.
    for key in large:
        torch.testing.assert_close(accumulated[key], large[key], atol=5e-5, rtol=1e-4)


def test_the_loop_fuses_a_decoders_head_with_the_loss_and_trains_as_with_transformers_loss(monkeypatch):
    """The run's adapter after 3 steps is the one transformers' own loss gives (train/lm_loss.py)."""
    from peftlab.train import lm_loss
    from peftlab.train.loop import training_steps

    task, tokenizer = causal_task(), word_tokenizer()

    def run():
        torch.manual_seed(0)
        model = peftlab.apply(tiny_model("llama", "causal-lm"), peftlab.LoraConfig(r=4, target_modules="all-linear"))
        return model, _trained(model, task, tokenizer, batch_size=4)

    model, fused = run()
    steps = training_steps(model, task, tokenizer, TrainConfig(max_steps=1, batch_size=4, **FAST))
    steps.step()
    assert steps.lm_head is not None and steps.lm_head.workspace is not None
    monkeypatch.setattr(lm_loss.FusedLmHead, "for_model", classmethod(lambda cls, model: None))
    _, unfused = run()
    for key in unfused:
        torch.testing.assert_close(fused[key], unfused[key], atol=1e-5, rtol=1e-4)


def test_causal_lm_evaluation_reports_perplexity_and_generation_scores():
    task, tokenizer = causal_task(), word_tokenizer()
    model = peftlab.apply(tiny_model("gpt2", "causal-lm"), peftlab.LoraConfig(r=4, target_modules=("c_attn",)))
    one = evaluate(model, task, tokenizer, batch_size=1)
    metrics = evaluate(model, task, tokenizer, batch_size=3, generate=True, max_new_tokens=4, samples=2)
    assert metrics["loss"] == pytest.approx(one["loss"], rel=1e-5)  # averaged over tokens, not batches
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["loss"]).exp().item(), rel=1e-5)
    assert metrics["prompts"] == 6 and len(metrics["samples"]) == 2 and 0 <= metrics["rouge_l"] <= 100


def test_classification_evaluation_matches_a_manual_count(task, tokenizer):
    model = tiny_bert()
    metrics = evaluate(model, task, tokenizer, batch_size=5)
    batch = tokenizer([ex.text for ex in task.dev], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    labels = torch.tensor([ex.label for ex in task.dev])
    assert metrics["accuracy"] == pytest.approx((predicted == labels).float().mean().item())
    assert metrics["examples"] == len(task.dev) and 0 <= metrics["macro_f1"] <= 1


def test_non_finite_loss_stops_with_a_clear_error(task, tokenizer):
    model = lora()
    with torch.no_grad():
        next(iter(model.trainable_parameters().values())).fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"loss became nan by step 5 .*lower the learning rate"):
        train(model, task, tokenizer, TrainConfig(max_steps=20, batch_size=8, **FAST), progress=False)


def test_gradient_checkpointing_and_bf16_options(task, tokenizer):
    plain = _trained(lora(), task, tokenizer, batch_size=8)
    model = lora()
    checkpointed = _trained(model, task, tokenizer, batch_size=8, gradient_checkpointing=True)
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], atol=1e-5, rtol=1e-4)
    assert not model.model.is_gradient_checkpointing  # switched off again after the run
    bf16 = _trained(lora(), task, tokenizer, batch_size=8, bf16=True)
    assert all(torch.isfinite(p).all() for p in bf16.values())


def test_out_dir_gets_the_adapter_and_metrics(task, tokenizer, tmp_path):
    model = lora()
    result = train(model, task, tokenizer, TrainConfig(max_steps=4, batch_size=8, eval_every=2, **FAST),
                   out_dir=tmp_path, progress=False)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["final"] == result.final_metrics and len(record["evaluations"]) == 2
    assert record["params"]["trainable"] == model.count_parameters()[0]
    assert record["task"]["label_names"] == ["0", "1"] and record["adapters"]["default"]["r"] == 4
    reloaded = peftlab.load_adapter(tiny_bert(), tmp_path)
    assert evaluate(reloaded, task, tokenizer) == pytest.approx(result.final_metrics)
