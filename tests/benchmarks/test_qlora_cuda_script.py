"""benchmarks/qlora_cuda.py runs end to end: its device-agnostic logic, on the CPU with a tiny LLaMA.

The GPU itself is not tested here (none is lent to the test machine); this checks that the one
GPU run the script exists for will not fail on building, timing or reporting.
"""

import json
import math

import pytest

from benchmark_scripts import load_benchmark
from tiny_models import tiny_model

pytest.importorskip("bitsandbytes", reason="the benchmark compares against bitsandbytes (pip install bitsandbytes)")


def test_the_gpu_benchmark_runs_on_cpu(tmp_path):
    folder = tmp_path / "tiny-llama"
    tiny_model("llama", "causal-lm").save_pretrained(folder)
    out = tmp_path / "result.json"
    results = load_benchmark("qlora_cuda").main(["--device", "cpu", "--model", str(folder), "--repeats", "2", "--size", "128",
                                   "--batch-size", "2", "--seq", "8", "--json", str(out)])
    assert json.loads(out.read_text())["device"] == "cpu"
    assert set(results["linear"]) == {"256 fwd", "256 fwd+bwd", "1 fwd"}
    for case in results["linear"].values():
        assert set(case) == {"peftlab", "bitsandbytes", "bfloat16"}
        assert all(row["median"] > 0 and row["n"] == 2 for row in case.values())
    step = results["step"]
    assert set(step["stats_s"]) == {"qlora", "hf-qlora", "lora"}
    assert set(step["ratios"]) == {"qlora/hf-qlora", "qlora/lora", "hf-qlora/lora"}
    assert all(math.isfinite(r["median"]) and 0 < r["low"] <= r["median"] <= r["high"] for r in step["ratios"].values())
