"""What a training run leaves on disk: the adapter folder plus `metrics.json`.

    out/
      adapter_config.json, adapter_model.safetensors   the adapter (Hugging Face PEFT layout)
      metrics.json                                     run_info, method, train_config, task,
                                                       params, final dev metrics, history, timing

Layout of `metrics.json` follows Hugging Face PEFT's benchmark records (`run_info`, `train_info`,
`meta_info`) loosely. The folder is written as one unit (`peftlab.io.replace_folder`): a kill
leaves the previous run's adapter and metrics or the new run's, never a mix; entries that are
not the run's (its `checkpoints/`, a user's own files) stay. `task.label_names` lets `peftlab
eval` and `peftlab merge` rebuild a classifier head of the right size.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers

from peftlab import __version__
from peftlab.core.adapter_io import write_adapter
from peftlab.core.combination_files import adapter_entries
from peftlab.core.model import PeftModel
from peftlab.data.tasks import Task
from peftlab.errors import AdapterFileError
from peftlab.io import PLAIN_NAME, child_path, replace_folder, write_json
from peftlab.train.config import TrainConfig

if TYPE_CHECKING:
    from peftlab.train.records import TrainResult

METRICS_NAME = "metrics.json"


def _program(argv0: str) -> str:
    """How the user started this process: `python -m peftlab`, `peftlab`, or a script path."""
    return "python -m peftlab" if argv0.endswith("__main__.py") else (Path(argv0).name or argv0)


def run_info(command_line: list[str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Versions, machine and command line (default: this process's `sys.argv`); `threads` is
    what the run computed with (default: torch's setting now)."""
    words = command_line or [_program(sys.argv[0]), *sys.argv[1:]]
    return {
        "peftlab": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "command_line": shlex.join(words),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def run_record(peft_model: PeftModel, task: Task, config: TrainConfig, result: TrainResult,
               extra: dict[str, Any] | None = None, command_line: list[str] | None = None) -> dict[str, Any]:
    trainable, total = peft_model.count_parameters()
    timing = {key: getattr(result, key) for key in ("wall_time_s", "train_time_s", "eval_time_s", "cpu_time_s",
                                                    "step_time", "peak_rss_mb", "peak_gpu_memory_mb")}
    return {
        "run_info": run_info(command_line, result.threads),
        "adapters": {name: peft_model.configs[name].to_dict() for name in peft_model.active_adapters},
        "train_config": config.to_dict(),
        "task": {"name": task.name, "kind": task.kind, "train_examples": len(task.train),
                 "dev_examples": len(task.dev), "label_names": list(task.label_names)},
        "params": {"trainable": trainable, "total": total, "trainable_percent": 100.0 * trainable / total},
        **(extra or {}),
        "final": result.final_metrics,
        "train_info": {"steps": result.steps, "epochs": result.epochs, "examples_seen": result.examples_seen,
                       **timing},
        "history": result.history,
        "evaluations": result.evaluations,
    }


def write_run(out_dir: str | Path, peft_model: PeftModel, task: Task, config: TrainConfig, result: TrainResult,
              extra: dict[str, Any] | None = None, command_line: list[str] | None = None) -> Path:
    """Save the active adapter(s) and `metrics.json` in `out_dir`, replacing the run saved there.

    One active adapter (or combination of methods) is written into `out_dir` itself; several go
    to `out_dir/<name>/` each.
    """
    out_dir = Path(out_dir)
    names = peft_model.units(peft_model.active_adapters)
    owned = run_entries(out_dir)
    with replace_folder(out_dir, carry=lambda entry: entry.name not in owned) as temporary:
        for name in names:
            write_adapter(peft_model, temporary if len(names) == 1 else child_path(temporary, name, "adapter name"),
                          name)
        write_json(temporary / METRICS_NAME, run_record(peft_model, task, config, result, extra, command_line))
    return out_dir


def run_entries(folder: Path) -> set[str]:
    """The entries of `folder` that belong to the run saved there: metrics.json, the adapter files
    and, for a run of several adapters, the adapter folders its metrics.json names."""
    owned = adapter_entries(folder) | {METRICS_NAME}
    try:
        adapters = json.loads((folder / METRICS_NAME).read_text())["adapters"]
        units = {str(name).partition(":")[0] for name in adapters}
    except (OSError, ValueError, KeyError, TypeError):
        return owned
    return owned | {unit for unit in units if len(units) > 1 and PLAIN_NAME.fullmatch(unit)}


def read_run(folder: str | Path) -> dict[str, Any] | None:
    """The `metrics.json` that `peftlab train` wrote next to an adapter, or None if there is none."""
    path = Path(folder) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AdapterFileError(f"{path} is not valid JSON ({error}); delete it or re-run training") from None
