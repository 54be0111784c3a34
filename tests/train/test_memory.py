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
