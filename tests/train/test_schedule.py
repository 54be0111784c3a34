import pytest
import torch

from peftlab.errors import ConfigError
from peftlab.train import TrainConfig
from peftlab.train.schedule import epoch_order, linear_schedule_factor, make_optimizer, make_scheduler, warmup_steps


def test_linear_warmup_then_linear_decay_values():
    factors = [linear_schedule_factor(step, warmup=2, total=10) for step in range(11)]
    assert factors == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0])
    assert [linear_schedule_factor(step, warmup=0, total=4) for step in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_scheduler_drives_optimizer_learning_rate():
    weight = torch.nn.Parameter(torch.zeros(2, 2))
    config = TrainConfig(learning_rate=0.1)
    optimizer = make_optimizer({"w": weight}, config)
    scheduler = make_scheduler(optimizer, warmup=1, total=3)
    seen = []
    for _ in range(3):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.0, 0.1, 0.05])


def test_warmup_from_ratio_or_steps():
    assert warmup_steps(TrainConfig(warmup_ratio=0.06), 125) == 8  # ceil(7.5)
    assert warmup_steps(TrainConfig(warmup_steps=5, warmup_ratio=0.5), 100) == 5
    assert warmup_steps(TrainConfig(warmup_steps=500), 100) == 100


def test_weight_decay_only_on_matrices():
    params = {"w": torch.nn.Parameter(torch.ones(3, 2)), "bias": torch.nn.Parameter(torch.ones(3)),
              "norm": torch.nn.Parameter(torch.ones(3))}
    groups = make_optimizer(params, TrainConfig(weight_decay=0.1)).param_groups
    decays = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decays == {id(params["w"]): 0.1, id(params["bias"]): 0.0, id(params["norm"]): 0.0}


def test_epoch_order_is_a_seeded_permutation():
    first = epoch_order(50, seed=3, epoch=0)
    assert sorted(first) == list(range(50))
    assert first == epoch_order(50, seed=3, epoch=0)
    assert first != epoch_order(50, seed=3, epoch=1)
    assert first != epoch_order(50, seed=4, epoch=0)


@pytest.mark.parametrize("changes, named", [
    ({"learning_rate": 0.0}, "learning_rate=0.0"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"grad_accum": 1.5}, "grad_accum=1.5"),
    ({"warmup_ratio": 2.0}, "warmup_ratio=2.0"),
    ({"device": "tpu"}, "device='tpu'"),
    ({"max_steps": -1}, "max_steps=-1"),
    ({"warmup_ratio": float("nan")}, "warmup_ratio=nan"),
    ({"weight_decay": float("inf")}, "weight_decay=inf"),
    ({"max_grad_norm": float("nan")}, "max_grad_norm=nan"),
    ({"epochs": float("inf")}, "epochs=inf"),
])
def test_train_config_rejects_bad_values_naming_them(changes, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        TrainConfig(**changes)
