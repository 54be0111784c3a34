"""Checkpoints in-process: exact resume, atomic folders, refusal of another config, divergence stops.

A "crash" here is an exception raised right after a checkpoint is written (the real SIGKILL of a
running `python -m peftlab train` is in test_checkpoint_kill.py).
"""

import json
import shutil

import peftlab
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import minilm_tokenizer, tiny_bert, toy_task

from peftlab.errors import ConfigError
from peftlab.train import CheckpointError, TrainConfig, TrainingDivergedError, find_checkpoint, train
from peftlab.train import checkpoint as checkpoint_module
from peftlab.train.checkpoint import COMPLETE, LATEST, complete_checkpoints

RUN = TrainConfig(learning_rate=1e-2, max_steps=12, batch_size=8, num_threads=1, log_every=4, warmup_ratio=0.25,
                  eval_every=6, checkpoint_every=3)


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def task():
    return toy_task(train=40, dev=8)  # 5 micro-batches per epoch: the 12 steps cross two epoch boundaries


def lora(r=4):
    torch.manual_seed(0)
    return peftlab.apply(tiny_bert(), peftlab.LoraConfig(r=r, alpha=8, target_modules=("query", "value"), dropout=0.3))


def adapter(model):
    return {k: p.detach().clone() for k, p in model.trainable_parameters().items()}


class Crash(Exception):
    pass


def crash_after(monkeypatch, step):
    """Make the run stop like a killed process right after checkpoint `step` is on disk."""
    original = checkpoint_module.save_checkpoint

    def save_then_crash(directory, **kwargs):
        path = original(directory, **kwargs)
        if kwargs["position"]["step"] == step:
            raise Crash
        return path

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_crash)


@pytest.fixture(scope="module")
def uninterrupted(task, tokenizer, tmp_path_factory):
    model = lora()
    result = train(model, task, tokenizer, RUN, checkpoint_dir=tmp_path_factory.mktemp("whole"), progress=False)
    return adapter(model), result


def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(task, tokenizer, tmp_path, monkeypatch, uninterrupted):
    expected, whole = uninterrupted
    with monkeypatch.context() as patch:
        crash_after(patch, 6)
        with pytest.raises(Crash):
            train(lora(), task, tokenizer, RUN, checkpoint_dir=tmp_path, progress=False)
    assert [f.name for f in complete_checkpoints(tmp_path)] == ["step-3", "step-6"]
    torch.manual_seed(123)  # the resumed run must not depend on the process's RNG state
    model = lora()
    resumed = train(model, task, tokenizer, RUN, checkpoint_dir=tmp_path, resume_from=tmp_path, progress=False)
    for key, value in adapter(model).items():
        assert (value - expected[key]).abs().max() <= 1e-6, key
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in whole.history], abs=1e-6)
    assert [e["step"] for e in resumed.evaluations] == [6, 12]
    assert resumed.final_metrics == pytest.approx(whole.final_metrics)
    assert resumed.examples_seen == whole.examples_seen == 12 * 8
    assert resumed.step_time["count"] == 6  # only the steps this process ran


def test_checkpoint_folder_layout_and_retention(task, tokenizer, tmp_path):
    train(lora(), task, tokenizer, RUN.replace(max_steps=8, checkpoint_every=2, keep_checkpoints=2),
          checkpoint_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "step-6", "step-8"]
    assert (tmp_path / LATEST).read_text().strip() == "step-8"
    folder = tmp_path / "step-8"
    assert sorted(p.name for p in folder.iterdir()) == [COMPLETE, "optimizer.safetensors", "rng.safetensors",
                                                        "state.json", "trainable.safetensors"]
    state = json.loads((folder / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 1, 3)
    assert state["train_config"]["learning_rate"] == 1e-2 and state["adapters"]["default"]["dropout"] == 0.3
    assert state["scheduler"]["last_epoch"] == 8 and [h["step"] for h in state["progress"]["history"]] == [4, 8]
    assert set(state["optimizer"]["state"]["0"]) == {"step", "exp_avg", "exp_avg_sq"}


def test_resume_ignores_half_written_folders(task, tokenizer, tmp_path):
    run_folder, tmp_path = tmp_path, tmp_path / "checkpoints"
    train(lora(), task, tokenizer, RUN.replace(max_steps=6), out_dir=run_folder, progress=False)
    assert find_checkpoint(tmp_path) == find_checkpoint(run_folder) == tmp_path / "step-6"
    shutil.copytree(tmp_path / "step-6", tmp_path / "step-9.tmp-999999")  # a killed writer's folder
    shutil.copytree(tmp_path / "step-6", tmp_path / "step-10")
    (tmp_path / "step-10" / COMPLETE).unlink()                               # renamed but unmarked
    shutil.copytree(tmp_path / "step-6", tmp_path / "step-11")
    with open(tmp_path / "step-11" / "optimizer.safetensors", "r+b") as file:
        file.truncate(100)                                                   # a file shorter than recorded
    (tmp_path / LATEST).write_text("step-11\n")
    assert find_checkpoint(tmp_path) == tmp_path / "step-6"
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        find_checkpoint(tmp_path / "step-10")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        find_checkpoint(empty)


SHORT = RUN.replace(max_steps=3)


@pytest.mark.parametrize("change, field", [
    (dict(config=SHORT.replace(learning_rate=2e-2)), "train config field 'learning_rate'"),
    (dict(config=SHORT.replace(max_steps=20)), "train config field 'max_steps'"),
    (dict(r=8), "adapter 'default' config field 'r'"),
    (dict(train_rows=38), "the training data's sha256"),
])
def test_a_resume_with_another_setup_is_refused_naming_the_field(task, tokenizer, tmp_path, change, field):
    train(lora(), task, tokenizer, SHORT, checkpoint_dir=tmp_path, progress=False)
    other_task = toy_task(train=change["train_rows"], dev=8) if "train_rows" in change else task
    with pytest.raises(ConfigError, match=f"cannot resume from .*step-3: {field} is .* in the checkpoint but"):
        train(lora(r=change.get("r", 4)), other_task, tokenizer, change.get("config", SHORT),
              checkpoint_dir=tmp_path, resume_from=tmp_path, progress=False)


def test_runtime_settings_may_change_on_resume(task, tokenizer, tmp_path):
    train(lora(), task, tokenizer, SHORT, checkpoint_dir=tmp_path, progress=False)
    changed = SHORT.replace(num_threads=2, log_every=1, eval_every=None, checkpoint_every=1)
    result = train(lora(), task, tokenizer, changed, checkpoint_dir=tmp_path, resume_from=tmp_path, progress=False)
    assert result.steps == 3 and result.step_time == {}  # nothing left to run


def nan_loss_from(model, micro_batch):
    """A forward hook that makes every loss from the `micro_batch`-th forward (0-based) on NaN."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) > micro_batch and module.training:
            output["loss"] = output["loss"] * float("nan")
        return output

    model.model.register_forward_hook(hook)
    return model


def test_nan_loss_stops_the_run_and_leaves_the_last_good_checkpoint(task, tokenizer, tmp_path):
    model = nan_loss_from(lora(), micro_batch=4)  # steps 1-4 finite, step 5 NaN
    config = RUN.replace(log_every=10, checkpoint_every=2, keep_checkpoints=5, eval_every=None)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan by step 6") as stopped:
        train(model, task, tokenizer, config, checkpoint_dir=tmp_path, progress=False)
    assert (stopped.value.reason, stopped.value.step) == ("nonfinite", 6)
    assert [f.name for f in complete_checkpoints(tmp_path)] == ["step-2", "step-4"]
    assert find_checkpoint(tmp_path) == tmp_path / "step-4"
    saved = load_file(str(tmp_path / "step-4" / "trainable.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_weights_that_overflow_under_a_finite_loss_are_not_checkpointed(task, tokenizer, tmp_path):
    model = lora()
    calls = []

    def infinite_gradient_at_step_3(grad):  # the loss of step 3 is finite, its update is not
        calls.append(1)
        return grad * float("inf") if len(calls) == 3 else grad

    next(iter(model.trainable_parameters().values())).register_hook(infinite_gradient_at_step_3)
    config = RUN.replace(log_every=10, checkpoint_every=1, max_grad_norm=None, eval_every=None)
    with pytest.raises(TrainingDivergedError, match="trainable weights became non-finite at step 3") as stopped:
        train(model, task, tokenizer, config, checkpoint_dir=tmp_path, progress=False)
    assert stopped.value.reason == "nonfinite"
    assert find_checkpoint(tmp_path) == tmp_path / "step-2"


def test_a_rising_loss_stops_the_run_once_past_the_fraction(task, tokenizer):
    model = lora()
    calls = []

    def rising(module, args, output):  # each step's loss 50% above the previous one's scale
        calls.append(1)
        output["loss"] = output["loss"] * 1.5 ** len(calls)
        return output

    model.model.register_forward_hook(rising)
    config = RUN.replace(log_every=2, checkpoint_every=None, eval_every=None, stop_if_loss_rises_after=0.5)
    with pytest.raises(TrainingDivergedError, match=r"loss rose from .* \(step 2\) to .* at step 6 of 12") as stopped:
        train(model, task, tokenizer, config, progress=False)
    assert (stopped.value.reason, stopped.value.step) == ("rising", 6)  # step 4 was higher too, but before 50%


def test_checkpoints_need_a_folder(task, tokenizer):
    with pytest.raises(ConfigError, match="checkpoint_every is set but there is nowhere to write"):
        train(lora(), task, tokenizer, RUN, progress=False)
    with pytest.raises(ConfigError, match=r"stop_if_loss_rises_after=1.5 is out of range"):
        RUN.replace(stop_if_loss_rises_after=1.5)
