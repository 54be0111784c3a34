"""`--report-to tensorboard|mlflow`: what `peftlab train` and a comparison log, read back with
TensorBoard's own event reader and the MLflow client on the file store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from train_helpers import write_tiny_model, write_toy_data
from typer.testing import CliRunner

from peftlab.cli.main import app
from peftlab.errors import ConfigError
from peftlab.tracking import EXPERIMENT, log_compare_results, parse_report_to

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed: pip install 'peftlab[tracking]'")
mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is not installed: pip install 'peftlab[tracking]'")

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "example-compare"


def _events(folder: Path):
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _client(root: Path):
    return mlflow.MlflowClient(tracking_uri=(root / "mlruns").resolve().as_uri())


def _runs(root: Path) -> dict[str, object]:
    client = _client(root)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracking")
    model, data = write_tiny_model(root / "model"), write_toy_data(root / "data", train=48, dev=16)
    out = root / "run"
    result = CliRunner().invoke(app, ["train", "--model", str(model), "--data", str(data), "--out", str(out),
                                      "--steps", "6", "--batch-size", "8", "--log-every", "2", "--eval-every", "3",
                                      "--lr", "1e-2", "--threads", "1", "--no-progress",
                                      "--report-to", "tensorboard,mlflow"])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "metrics.json").read_text())


def test_train_tensorboard_events_hold_the_loss_curve(trained):
    out, record = trained
    history = record["history"]
    events = _events(out / "tensorboard" / "run")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [h["step"] for h in history] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    for tag in ("train/learning_rate", "train/steps_per_s", "train/examples_per_s", "eval/accuracy", "eval/loss"):
        assert tag in events.Tags()["scalars"], tag
    assert [e.step for e in events.Scalars("eval/accuracy")] == [3, 6]


def test_train_mlflow_file_store_holds_the_same_curve_and_the_parameters(trained):
    out, record = trained
    history = record["history"]
    run = _runs(out)["run"]
    losses = _client(out).get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == \
        [(h["step"], pytest.approx(h["loss"], rel=1e-6)) for h in history]
    assert run.data.params["method"] == "lora" and run.data.params["train/max_steps"] == "6"
    assert run.info.status == "FINISHED"


def test_compare_results_are_logged_per_method_with_the_charts(tmp_path):
    out = tmp_path / "cmp"
    shutil.copytree(EXAMPLE, out)
    results = json.loads((out / "results.json").read_text())
    log_compare_results(results, out, "tensorboard,mlflow")
    runs = _runs(out)
    parent = runs["compare-minilm-sst2"]
    client = _client(out)
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id, "charts")) == \
        sorted(f"charts/{p.name}" for p in (out / "charts").glob("*.png"))
    for record in results["methods"]:
        run = runs[record["method"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.metrics["quality/value"] == pytest.approx(record["measurements"]["quality"]["value"])
        assert run.data.metrics["params/trainable"] == record["measurements"]["params"]["trainable"]
        curve = _events(out / "tensorboard" / record["method"]).Scalars("train/loss")
        expected = record["measurements"]["train"]["loss_history"]
        assert [(e.step, e.value) for e in curve] == [(p["step"], pytest.approx(p["loss"])) for p in expected]
    images = _events(out / "tensorboard" / "compare-minilm-sst2").Tags()["images"]
    assert sorted(images) == sorted(p.stem for p in (out / "charts").glob("*.png"))


def test_report_to_is_checked():
    assert parse_report_to("none") == () and parse_report_to(" TensorBoard , mlflow ") == ("tensorboard", "mlflow")
    with pytest.raises(ConfigError, match="wandb"):
        parse_report_to("wandb")
    result = CliRunner().invoke(app, ["compare", "--report-to", "wandb", "--no-progress"])
    assert result.exit_code == 2 and "error: --report-to wandb" in result.output
