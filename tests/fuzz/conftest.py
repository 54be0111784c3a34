"""The fuzz suite: hypothesis-generated hostile inputs at every boundary peftlab reads (issue 22).

Each boundary runs `CASES` (500) generated cases by default, derandomized so CI is repeatable;
`HYPOTHESIS_PROFILE=explore` draws fresh random cases (5,000 per boundary) when hunting for new
failures. No example database is written into the repository.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # train_helpers: tiny model folder, toy data

settings.register_profile("ci", max_examples=500, deadline=None, database=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("explore", parent=settings.get_profile("ci"), max_examples=5000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two spin-waiting threads on a loaded machine cost ~100x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
