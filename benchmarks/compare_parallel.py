"""Wall time of `peftlab compare --profile tuned` one run at a time vs `--parallel 2` (issue 19).

Both comparisons run the same plan on a small budget (MiniLM + SST-2 subset, two methods, a
learning-rate sweep each), alternating sequential / parallel for `--rounds` rounds so that load
on the shared machine hits both alike; each result prints with the load average around it, and
the dev scores of the two executors are checked equal (the executor must not change results).

    .venv/bin/python benchmarks/compare_parallel.py --rounds 2 --out /tmp/compare-parallel
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PLAN = ["--model", "minilm", "--data", "sst2", "--methods", "lora,ia3", "--profile", "tuned", "--steps", "30",
        "--max-train", "256", "--max-dev", "128", "--sweep-seeds", "1", "--threads", "1", "--timing-seconds", "5",
        "--no-progress"]


def run(out: Path, extra: list[str]) -> tuple[float, dict[str, float], tuple[float, float]]:
    before = os.getloadavg()[0]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "peftlab", "compare", *PLAN, "--out", str(out), *extra], check=True,
                   capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    results = json.loads((out / "results.json").read_text())
    scores = {r["method"]: r["measurements"]["quality"]["value"] for r in results["methods"]}
    return wall, scores, (before, os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/compare-parallel"))
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"sequential": [], "parallel 2": []}
    scores = {}
    for round_index in range(args.rounds):
        order = [("sequential", []), ("parallel 2", ["--parallel", "2"])]
        for name, extra in order if round_index % 2 == 0 else order[::-1]:
            wall, found, load = run(args.out / f"{name.replace(' ', '-')}-{round_index}", extra)
            walls[name].append(wall)
            scores.setdefault(name, found)
            assert found == scores[name], f"{name}: dev scores changed between rounds"
            print(f"round {round_index + 1} {name:<11} {wall:7.1f} s  load average {load[0]:.2f} -> {load[1]:.2f}",
                  flush=True)
    assert scores["sequential"] == scores["parallel 2"], scores
    ratios = [p / s for s, p in zip(walls["sequential"], walls["parallel 2"])]
    print(f"dev scores equal: {scores['sequential']}")
    for name, values in walls.items():
        print(f"{name:<11} median {statistics.median(values):7.1f} s  (min {min(values):.1f}, max {max(values):.1f})")
    print(f"parallel / sequential per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
