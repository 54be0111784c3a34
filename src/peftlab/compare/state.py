"""A comparison's state on disk, written as it goes, so an interrupted one can be resumed.

    OUT/runs/plan.json        the plan as asked for (max_length fitted), its length facts, command
    OUT/runs/lr-<m>.json      method m's learning-rate sweep (tuned profile), once it finished
    OUT/runs/<m>.json         method m's training runs, one per seed, appended as each finishes

Every file is written atomically (`peftlab.io`), so a kill leaves the previous version or the
new one. `--resume OUT` reads them back: the plan asked for now must equal the saved one (any
field that differs is named; only the thread count may change), finished sweeps and runs are
kept, and the rest run as if the comparison had never stopped: the same seeds and rows give the
same runs, so the results equal those of an uninterrupted comparison.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from peftlab.compare.plan import ComparePlan
from peftlab.errors import ConfigError
from peftlab.io import write_json

RUNS = "runs"
RUNTIME_FIELDS = ("threads",)  # may differ on resume: where and how fast, not what, is computed


def _file_name(method: str) -> str:
    return method.replace("/", "_")  # method names are registry names and "a+b" combinations


class CompareState:
    """The saved state of the comparison in `out_dir` (see the module doc)."""

    def __init__(self, out_dir: Path) -> None:
        self.folder = Path(out_dir) / RUNS

    def exists(self) -> bool:
        return (self.folder / "plan.json").is_file()

    def start(self, plan: ComparePlan, lengths: dict[str, Any], command: str) -> None:
        """Begin a new comparison here: any earlier state is removed."""
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        write_json(self.folder / "plan.json", {"plan": plan.to_dict(), "lengths": lengths, "command": command})

    def resume(self, plan: ComparePlan) -> dict[str, Any]:
        """The saved plan record, after checking that `plan` asks for the same comparison."""
        if not self.exists():
            raise ConfigError(f"cannot resume: {self.folder.parent} holds no comparison (no {RUNS}/plan.json); "
                              "run without --resume to start one")
        saved = json.loads((self.folder / "plan.json").read_text())
        differences = _differences(saved["plan"], json.loads(json.dumps(plan.to_dict())))  # as JSON holds it
        if differences:
            path, was, now = differences[0]
            raise ConfigError(f"cannot resume {self.folder.parent}: {path} is {was!r} in the saved comparison but "
                              f"{now!r} now; repeat the options it was started with (`{saved['command']}`), or "
                              "start a new comparison in another --out")
        return saved

    def sweep(self, method: str) -> dict[str, Any] | None:
        path = self.folder / f"lr-{_file_name(method)}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_sweep(self, method: str, found: dict[str, Any]) -> None:
        write_json(self.folder / f"lr-{_file_name(method)}.json", found)

    def runs(self, method: str) -> list[dict[str, Any]]:
        path = self.folder / f"{_file_name(method)}.json"
        return json.loads(path.read_text())["runs"] if path.is_file() else []

    def save_runs(self, method: str, runs: list[dict[str, Any]]) -> None:
        write_json(self.folder / f"{_file_name(method)}.json", {"runs": runs})


def _differences(saved: Any, now: Any, path: str = "plan") -> list[tuple[str, Any, Any]]:
    """(path, saved value, current value) of every leaf that differs, runtime fields aside."""
    if isinstance(saved, dict) and isinstance(now, dict):
        found = []
        for key in dict.fromkeys([*saved, *now]):
            if path == "plan" and key in RUNTIME_FIELDS:
                continue
            found += _differences(saved.get(key), now.get(key), f"{path}.{key}")
        return found
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        return [d for i, (a, b) in enumerate(zip(saved, now)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if saved == now else [(path, saved, now)]
