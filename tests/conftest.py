import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing.*")


# `make test` runs two pytest-xdist workers on CI's two cores: one torch thread each then
# (two each would oversubscribe the cores); a plain serial `pytest` keeps two threads
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pytest_configure(config):
    # a chain that diverges in a test is a test bug unless the test expects the warning
    config.addinivalue_line("filterwarnings", "error::RuntimeWarning")
