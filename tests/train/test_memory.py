"""The live tensor byte tracker against allocation sequences counted by hand."""

from __future__ import annotations

import torch
from torch import nn

from peftlab.train.memory import TensorPeakTracker

FLOAT = 4  # bytes


def test_peak_of_a_hand_counted_allocation_sequence():
    holder = nn.Linear(10, 10, bias=False)  # 400 bytes that exist before tracking starts
    with TensorPeakTracker(holder) as tracker:
        a = torch.empty(1000)                # 4,000 live: 4,400
        b = torch.empty(2000)                # 8,000: 12,400  <- peak
        view = b[:500]                       # a view shares b's storage: no new bytes
        del a                                # 8,400
        c = torch.empty(500)                 # 2,000: 10,400
        del b                                # b's storage lives on through the view: still 10,400
        current_with_view = tracker.current
        del view                             # now it is freed: 2,400
        assert tracker.current == 100 * FLOAT + 500 * FLOAT
    assert tracker.peak_bytes == (100 + 1000 + 2000) * FLOAT
    assert current_with_view == (100 + 2000 + 500) * FLOAT
    del c


def test_in_place_ops_and_views_add_no_bytes():
    holder = nn.Linear(4, 4, bias=False)
    with TensorPeakTracker(holder) as tracker:
        x = torch.zeros(256)
        x.add_(1.0)
        x.view(16, 16).t()
        after = tracker.current
    assert after == (16 + 256) * FLOAT and tracker.peak_bytes == after


def test_the_peak_of_a_training_step_is_split_into_weights_gradients_optimizer_and_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 8, bias=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    weights = (64 * 32 + 32 * 8) * FLOAT
    x = torch.randn(16, 64)
    tracker = TensorPeakTracker(model, optimizer)
    with tracker:
        for _ in range(2):
            loss = model(x).pow(2).mean()
            loss.backward()
            optimizer.step()
            tracker.end_of_step(list(model.parameters()), shape=(16, 64))
            optimizer.zero_grad(set_to_none=True)
            del loss
    split = tracker.split
    assert split["weights"] == weights
    assert sum(split.values()) == tracker.peak_bytes
    # The first step's AdamW update allocates its two states while the gradients are alive: the
    # peak holds all of them (plus the step counters, which live in the optimizer state too).
    assert split["gradients"] == weights
    assert 2 * weights <= split["optimizer"] <= 2 * weights + 64
    assert tracker.peak_shape == (16, 64)
    assert tracker.to_dict()["peak_mb"] == tracker.peak_bytes / 2**20


def test_a_training_run_reports_its_tensor_peak_and_counts_only_steps_that_can_set_it():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from train_helpers import minilm_tokenizer, tiny_bert, toy_task

    import peftlab
    from peftlab.train import TrainConfig, train
    from peftlab.train.memory import TensorPeakTracker

    entered = []
    original = TensorPeakTracker.__enter__

    def counting(self):
        entered.append(1)
        return original(self)

    model = peftlab.apply(tiny_bert(), peftlab.LoraConfig(r=4))
    task = toy_task(train=64, dev=8)
    settings = TrainConfig(learning_rate=1e-3, max_steps=8, batch_size=8, max_length=16, track_memory=True,
                           num_threads=1)
    TensorPeakTracker.__enter__ = counting
    try:
        result = train(model, task, minilm_tokenizer(), settings, progress=False, dev_examples=())
    finally:
        TensorPeakTracker.__enter__ = original
    peak = result.tensor_memory
    weights = sum(t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()]) / 2**20
    assert peak["weights_mb"] == weights and peak["activations_mb"] > 0 and peak["batch_shape"][0] == 8
    assert sum(peak[f"{k}_mb"] for k in ("weights", "gradients", "optimizer", "activations")) == peak["peak_mb"]
    assert 2 <= len(entered) < 8  # the first two steps and any with a longer batch, not all eight
