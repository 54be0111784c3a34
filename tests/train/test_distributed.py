"""Data-parallel training (DDP): 2 CPU processes under torchrun (gloo) match one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import assert_methods_train_alike, assert_same_adapters, write_tiny_model, write_toy_data
from typer.testing import CliRunner

from peftlab.cli.main import app
from peftlab.errors import ConfigError
from peftlab.train import distributed



def test_ranks_split_every_micro_batch_into_contiguous_near_equal_slices():
    rows = list(range(100, 107))  # 7 rows over 2 and 3 ranks
    for world in (2, 3):
        shards = [distributed.Distributed(rank, world, torch.device("cpu")).shard(rows) for rank in range(world)]
        assert sum(shards, []) == rows
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert distributed.Distributed(1, 4, torch.device("cpu")).shard([5, 6]) == [5]
    assert distributed.Distributed(0, 4, torch.device("cpu")).shard([5]) == []  # a rank may get no rows


def test_a_partial_launch_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT is not: .*torchrun"):
        distributed.setup("cpu")


def run_args(root, out):
    # An odd batch (7 rows: 3 + 4 per rank) and 2 micro-batches per step exercise the item weighting.
    return ["train", "--model", str(root / "model"), "--data", str(root / "data"), "--out", str(out),
            "--method", "lora", "--rank", "4", "--alpha", "8", "--targets", "query,value", "--dropout", "0",
            "--lr", "1e-2", "--steps", "4", "--batch-size", "7", "--grad-accum", "2", "--log-every", "2",
            "--threads", "1", "--no-progress", "--max-dev", "8", "--checkpoint-every", "2"]


def test_two_processes_train_the_same_adapter_as_one(tmp_path):
    write_tiny_model(tmp_path / "model")
    write_toy_data(tmp_path / "data", train=48, dev=8)
    two, one = tmp_path / "two", tmp_path / "one"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "peftlab",
         *run_args(tmp_path, two)],
        capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("adapter and metrics.json written") == 1  # rank 0 alone reports
    assert "cpu, 2 processes" in launched.stdout
    single = CliRunner().invoke(app, run_args(tmp_path, one))
    assert single.exit_code == 0, single.output

    expected = assert_same_adapters(one, two, 1e-5)
    assert any(key.endswith("lora_B.weight") and expected[key].abs().max() > 1e-3 for key in expected)  # it trained
    records = [json.loads((folder / "metrics.json").read_text()) for folder in (two, one)]
    # 3 steps of 2 × 7 rows, then the epoch's last micro-batch (6 rows) alone: a step never spans epochs
    assert records[0]["train_info"]["examples_seen"] == records[1]["train_info"]["examples_seen"] == 48
    assert [h["loss"] for h in records[0]["history"]] == pytest.approx([h["loss"] for h in records[1]["history"]],
                                                                       abs=1e-5)
    state = json.loads((two / "checkpoints" / "step-4" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def test_two_processes_train_ia3_prompt_and_lora_with_prompt_as_one(tmp_path):
    """Model-level hooks (prompt) and combinations go through DDP like adapter layers do."""
    write_tiny_model(tmp_path / "model")
    write_toy_data(tmp_path / "data", train=40, dev=4)
    assert_methods_train_alike(tmp_path, 1e-5)


def test_the_hand_written_gradient_all_reduce_is_gone():
    source = (Path(distributed.__file__)).read_text()
    assert "DistributedDataParallel(" in source and "fully_shard(" in source
    assert not hasattr(distributed.Distributed, "reduce_gradients")
