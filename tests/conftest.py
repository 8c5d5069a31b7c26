import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*ArviZ is undergoing.*")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pytest_configure(config):
    # a chain that diverges in a test is a test bug unless the test expects the warning
    config.addinivalue_line("filterwarnings", "error::RuntimeWarning")
