import os
import warnings

import pytest
import torch
from torch import nn

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing.*")


# `make test` runs two pytest-xdist workers on CI's two cores: one torch thread each then
# (two each would oversubscribe the cores); a plain serial `pytest` keeps two threads
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture
def tabular_quiet():
    """For the tabular tests: one thread (their MLPs are too small to split, and a second
    thread spinning on a loaded machine slows every step many times over), and sklearn's
    and pandas' Future/User warnings silenced."""
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class GaussEnergy(nn.Module):
    """E(x) = (x - mu)^2 / (2 sd^2): the MLE is the data's mean and sd."""

    def __init__(self):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(0.0))
        self.log_sd = nn.Parameter(torch.tensor(0.0))

    def forward(self, x):
        return 0.5 * ((x[:, 0] - self.mu) / self.log_sd.exp()) ** 2


def pytest_configure(config):
    # a chain that diverges in a test is a test bug unless the test expects the warning
    config.addinivalue_line("filterwarnings", "error::RuntimeWarning")
