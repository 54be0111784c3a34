"""Checkpoints verify their content (issue 22): a checkpoint whose files differ from what was written
is skipped for the previous one, and the resumed run still equals the uninterrupted one; a
hand-edited checkpoint (checksums rewritten) is refused in one line naming the field or tensor."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_checkpoint import RUN, Crash, adapter, crash_after, lora
from train_helpers import minilm_tokenizer, toy_task

from peftlab.train import CheckpointError, find_checkpoint, train
from peftlab.train.checkpoint import COMPLETE
from peftlab.train.checkpoint_verify import file_record

FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def task():
    return toy_task(train=40, dev=8)


@pytest.fixture(scope="module")
def uninterrupted(task, tokenizer, tmp_path_factory):
    model = lora()
    result = train(model, task, tokenizer, RUN, checkpoint_dir=tmp_path_factory.mktemp("whole"), progress=False)
    return adapter(model), result


@pytest.fixture
def crashed(task, tokenizer, tmp_path, monkeypatch):
    """Checkpoints step-3 and step-6 of RUN, as a run killed after step 6 leaves them."""
    with monkeypatch.context() as patch:
        crash_after(patch, 6)
        with pytest.raises(Crash):
            train(lora(), task, tokenizer, RUN, checkpoint_dir=tmp_path, progress=False)
    return tmp_path


def garble(path, offset_from_end=5):
    """Change one byte near the end of `path` (same size: only the checksum can tell)."""
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x55
    path.write_bytes(bytes(data))


def rewrite_checksums(folder):
    """What a hand edit that also fixes complete.json does: the files verify again."""
    marker = json.loads((folder / COMPLETE).read_text())
    marker["files"] = {name: file_record(folder / name) for name in marker["files"]}
    (folder / COMPLETE).write_text(json.dumps(marker))


def resume(task, tokenizer, folder):
    model = lora()
    result = train(model, task, tokenizer, RUN, checkpoint_dir=folder, resume_from=folder, progress=False)
    return model, result


@pytest.mark.parametrize("name", FILES)
def test_a_tampered_checkpoint_falls_back_to_the_previous_valid_one_and_resumes_exactly(
        task, tokenizer, crashed, uninterrupted, caplog, name):
    garble(crashed / "step-6" / name)
    with caplog.at_level(logging.WARNING, logger="peftlab"):
        assert find_checkpoint(crashed) == crashed / "step-3"
    assert [r.getMessage() for r in caplog.records] == [
        f"checkpoint {crashed / 'step-6'} fails verification ({name} differs from what was written (sha256)): "
        "skipped for the previous complete one"]
    model, result = resume(task, tokenizer, crashed)
    expected, whole = uninterrupted
    for key, value in adapter(model).items():
        assert (value - expected[key]).abs().max() <= 1e-6, key
    assert [h["loss"] for h in result.history] == pytest.approx([h["loss"] for h in whole.history], abs=1e-6)
    assert result.final_metrics == pytest.approx(whole.final_metrics)


def test_a_cut_short_file_is_skipped_too_and_none_valid_is_one_line(crashed):
    with open(crashed / "step-6" / "optimizer.safetensors", "r+b") as file:
        file.truncate(100)
    assert find_checkpoint(crashed) == crashed / "step-3"
    garble(crashed / "step-3" / "state.json")
    with pytest.raises(CheckpointError, match="no valid checkpoint in .*: step-6, step-3 fail verification; start a "
                                              r"new run \(without --resume\)") as raised:
        find_checkpoint(crashed)
    assert "\n" not in str(raised.value)


def test_a_checkpoint_folder_named_itself_must_pass(crashed):
    garble(crashed / "step-6" / "rng.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint .*step-6 fails verification .*rng.safetensors differs"):
        find_checkpoint(crashed / "step-6")


def _edit_state(folder, edit):
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    (folder / "state.json").write_text(json.dumps(state))


def _edit_tensors(folder, name, edit):
    tensors = load_file(str(folder / name))
    save_file(edit(tensors), str(folder / name))


HAND_EDITS = {
    "state.json lacks train_config": (
        lambda f: _edit_state(f, lambda s: s.pop("train_config")), r"state.json: state.train_config is missing"),
    "state.json names an unknown tensor": (
        lambda f: _edit_state(f, lambda s: s["optimizer"]["state"]["0"].update(exp_avg={"tensor": "9.nothing"})),
        r"optimizer.state.0.exp_avg names tensor '9.nothing', which optimizer.safetensors lacks"),
    "rng garbled at the same size": (
        lambda f: _edit_tensors(f, "rng.safetensors", lambda t: {k: torch.full_like(v, 255) for k, v in t.items()}),
        r"rng.safetensors: rank 0's generator state is not valid"),
    "optimizer file garbled at the same size": (
        lambda f: garble(f / "optimizer.safetensors", offset_from_end=(f / "optimizer.safetensors").stat().st_size - 3),
        r"optimizer.safetensors cannot be read"),
    "trainable tensors all NaN": (
        lambda f: _edit_tensors(f, "trainable.safetensors", lambda t: {k: torch.full_like(v, float("nan"))
                                                                         for k, v in t.items()}),
        r"trainable.safetensors: tensor '.*' holds NaN or infinite values; this checkpoint cannot be resumed"),
    "optimizer moments infinite": (
        lambda f: _edit_tensors(f, "optimizer.safetensors", lambda t: {k: v * float("inf") if "exp_avg" in k else v
                                                                         for k, v in t.items()}),
        r"optimizer.safetensors: tensor '.*exp_avg.*' holds NaN or infinite values"),
    "scheduler step differs from the checkpoint's": (
        lambda f: _edit_state(f, lambda s: s["scheduler"].update(last_epoch=2)),
        r"scheduler.last_epoch is 2, the checkpoint's step 6"),
    "a loss in the history is NaN": (
        lambda f: _edit_state(f, lambda s: s["progress"]["history"][0].update(loss=float("nan"))),
        r"state.progress.history\[0\].loss must be a finite number, got nan"),
}


@pytest.mark.parametrize("case", HAND_EDITS)
def test_a_hand_edited_checkpoint_is_refused_in_one_line(task, tokenizer, crashed, case):
    edit, message = HAND_EDITS[case]
    edit(crashed / "step-6")
    rewrite_checksums(crashed / "step-6")
    assert find_checkpoint(crashed) == crashed / "step-6"  # it verifies: only its content can tell
    model = lora()
    before = adapter(model)
    with pytest.raises(CheckpointError, match=message) as raised:
        train(model, task, tokenizer, RUN, checkpoint_dir=crashed, resume_from=crashed, progress=False)
    assert "\n" not in str(raised.value)
    for key, value in adapter(model).items():  # refused before anything was restored
        assert torch.equal(value, before[key]), key
