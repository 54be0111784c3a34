"""Experiment tracking into local file stores: TensorBoard event files and an MLflow file store.

    tracker = open_tracker(parse_report_to("tensorboard,mlflow"), "runs/lora", run_name="lora")
    tracker.log_params({"method": "lora", "r": 16})
    tracker.log_metrics({"train/loss": 0.61, "train/learning_rate": 4e-4}, step=10)
    tracker.log_artifacts("runs/lora/charts")          # PNGs also become TensorBoard images
    tracker.close()

`--report-to` of `peftlab train` and `peftlab compare` names the backends (`none` by default):

    tensorboard   <dir>/tensorboard/<run>/events.out.tfevents.*   `tensorboard --logdir <dir>/tensorboard`
    mlflow        <dir>/mlruns/ (experiment "peftlab")            `mlflow ui --backend-store-uri <dir>/mlruns`

Nothing leaves the machine: both write plain files under the run's folder. MLflow 3 keeps its
file store in maintenance mode and refuses it unless `MLFLOW_ALLOW_FILE_STORE` is set; peftlab
sets it for its own client, since a file store is what it wants (no database to run or migrate).

What is logged: a training run's loss, learning rate and throughput at each log step, its dev
metrics at each evaluation and at the end (`train_callback`); a comparison's per-method
measurements and loss curve as one run per method, and its charts, report and results as
artifacts of a run named after the comparison (`log_compare_results`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from peftlab.errors import ConfigError

BACKENDS = ("tensorboard", "mlflow")
EXPERIMENT = "peftlab"
_INSTALL = "pip install 'peftlab[tracking]'"


def parse_report_to(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """`--report-to` text ("none", "tensorboard", "mlflow", or a comma list) as backend names."""
    words = text.split(",") if isinstance(text, str) else list(text or ())
    names = tuple(dict.fromkeys(w.strip().lower() for w in words if w.strip() and w.strip().lower() != "none"))
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(f"--report-to {', '.join(unknown)} is not a tracker: use none, {', '.join(BACKENDS)} "
                          "or a comma list of them")
    return names


def numeric_items(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers in a nested dict, keys joined with "/" (lists and text are skipped)."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(numeric_items(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class TensorBoardTracker:
    """One event-file folder per run: scalars, a text table of the parameters, PNGs as images."""

    def __init__(self, root: Path, run_name: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"--report-to tensorboard needs the tensorboard package: {_INSTALL}") from None
        self.folder = root / "tensorboard" / run_name
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def log_params(self, params: dict[str, Any]) -> None:
        rows = "\n".join(f"| {key} | {_param_text(value)} |" for key, value in params.items())
        self.writer.add_text("params", "| parameter | value |\n| --- | --- |\n" + rows)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_artifacts(self, folder: Path) -> None:
        """PNG files as images (tag = file stem); TensorBoard has no other file store."""
        import matplotlib.image

        for path in sorted(Path(folder).glob("*.png")):
            self.writer.add_image(path.stem, matplotlib.image.imread(str(path))[..., :3], dataformats="HWC")

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class MlflowTracker:
    """One MLflow run in the file store `<root>/mlruns`, experiment "peftlab" (optionally a child run)."""

    def __init__(self, root: Path, run_name: str, parent_run_id: str | None = None) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # see the module docstring
        try:
            from mlflow import MlflowClient
        except ImportError:
            raise ConfigError(f"--report-to mlflow needs the mlflow-skinny package: {_INSTALL}") from None
        self.store = root / "mlruns"
        self.client = MlflowClient(tracking_uri=self.store.resolve().as_uri())
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
        tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, _param_text(v)[:6000]) for k, v in params.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_artifacts(self, folder: Path) -> None:
        self.client.log_artifacts(self.run_id, str(folder), artifact_path=Path(folder).name)

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class Tracker:
    """Every chosen backend behind one set of calls (none chosen: every call does nothing)."""

    def __init__(self, backends: Iterable[Any]) -> None:
        self.backends = list(backends)

    def log_params(self, params: dict[str, Any]) -> None:
        for backend in self.backends:
            backend.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if metrics:
            for backend in self.backends:
                backend.log_metrics(metrics, step)

    def log_artifacts(self, folder: str | Path) -> None:
        if Path(folder).is_dir():
            for backend in self.backends:
                backend.log_artifacts(Path(folder))

    def close(self, failed: bool = False) -> None:
        for backend in self.backends:
            backend.close(failed)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, error_type: Any, *_: Any) -> None:
        self.close(failed=error_type is not None)  # a run that raised is marked FAILED in MLflow


def open_tracker(backends: Sequence[str], root: str | Path, run_name: str,
                 parent: Tracker | None = None) -> Tracker:
    """A `Tracker` writing run `run_name` under `root` for each backend in `backends`.

    With `parent`, MLflow runs are children of the parent's (TensorBoard runs are sibling folders)."""
    root = Path(root)
    parents = {type(b): b for b in (parent.backends if parent else [])}
    made = []
    for name in backends:
        if name == "tensorboard":
            made.append(TensorBoardTracker(root, run_name))
        elif name == "mlflow":
            parent_run = parents.get(MlflowTracker)
            made.append(MlflowTracker(root, run_name, parent_run.run_id if parent_run else None))
    return Tracker(made)


def train_callback(tracker: Tracker) -> Callable[[str, dict[str, Any]], None]:
    """The loop's `on_log`: a "train" record (loss, learning_rate, steps_per_s, examples_per_s) or an
    "eval" record (dev metrics) as metrics at its step, under "train/" or "eval/"."""
    def on_log(kind: str, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k not in ("step", "epoch")}
        tracker.log_metrics(numeric_items(values, f"{kind}/"), step=record["step"])

    return on_log


def log_compare_results(results: dict[str, Any], out_dir: str | Path, report_to: str | Sequence[str]) -> None:
    """A comparison's results (`compare/results.py` schema) into the trackers under `out_dir`.

    One parent run named after the comparison holds the plan as parameters and the charts, the
    reports and results.json as artifacts; one child run per method holds its settings, every
    number of its measurements and estimates, and its training loss curve by step."""
    backends = parse_report_to(report_to)
    if not backends:
        return
    out_dir = Path(out_dir)
    plan = results["plan"]
    with open_tracker(backends, out_dir, f"compare-{plan['model']}-{plan['data']}") as parent:
        parent.log_params({"model": plan["model"], "data": plan["data"], "profile": plan.get("profile"),
                           "seed": plan.get("seed"), "methods": [r["method"] for r in results["methods"]],
                           **{f"budget/{k}": v for k, v in plan.get("budget", {}).items()}})
        parent.log_artifacts(out_dir / "charts")
        for record in results["methods"]:
            with open_tracker(backends, out_dir, record["method"], parent=parent) as run:
                config = record.get("config") or {}
                run.log_params({"method": record["method"], "learning_rate": config.get("learning_rate"),
                                **{f"fields/{k}": v for k, v in (config.get("fields") or {}).items()},
                                "error": (record.get("error") or {}).get("message")})
                measurements = record.get("measurements") or {}
                steps = (measurements.get("train") or {}).get("steps") or 0
                run.log_metrics({**numeric_items(measurements), **numeric_items(record.get("estimates") or {},
                                                                                "estimates/")}, step=steps)
                for point in (measurements.get("train") or {}).get("loss_history") or []:
                    run.log_metrics({"train/loss": float(point["loss"])}, step=int(point["step"]))
        _log_report_files(parent, out_dir)


def _log_report_files(tracker: Tracker, out_dir: Path) -> None:
    """results.json and the reports as MLflow artifacts (TensorBoard keeps images only)."""
    files = [out_dir / name for name in ("results.json", "report.md", "report.html") if (out_dir / name).is_file()]
    for backend in tracker.backends:
        if isinstance(backend, MlflowTracker):
            for path in files:
                backend.client.log_artifact(backend.run_id, str(path))
