"""metrics.json records the threads the run computed with, not torch's setting after it."""

from __future__ import annotations

import json

import torch
from train_helpers import minilm_tokenizer, tiny_bert, toy_task

import peftlab
from peftlab.train import TrainConfig, train


def test_the_run_records_the_threads_it_used(tmp_path):
    outside = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = peftlab.apply(tiny_bert(), peftlab.LoraConfig(r=2))
        settings = TrainConfig(learning_rate=1e-3, max_steps=2, batch_size=8, max_length=16, num_threads=1)
        result = train(model, toy_task(train=16, dev=4), minilm_tokenizer(), settings, progress=False,
                       out_dir=tmp_path)
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(outside)
    assert result.threads == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["run_info"]["torch_threads"] == 1
