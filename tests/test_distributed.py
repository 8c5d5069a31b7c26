"""Chains across processes (gloo, 2 CPU processes on one machine via torchrun).

Each launch costs seconds (three interpreters import torch), so one launch (``gather``)
runs every gather and the tests below compare its parts with one process; the killed-rank
test needs two launches of its own."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from . import dist_worker as w

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")
HERE = Path(__file__).parent


def torchrun(mode: str, out: Path, env: dict | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         "2", str(HERE / "dist_worker.py"), mode, str(out)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})})
    if done.returncode and not env:
        raise AssertionError(done.stderr[-3000:])
    return done.returncode


@pytest.fixture(scope="module")
def gathered(tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    out = tmp_path_factory.mktemp("gather")
    torchrun("gather", out)
    return parts(out / "gather.npz")


def parts(path: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as saved:
        for key in saved.files:
            part, name = key.split("/", 1)
            out.setdefault(part, {})[name] = saved[key]
    return out


@functools.cache
def one_process() -> dict[str, np.ndarray]:
    """``posterior.sample`` of the worker's problem in this process, all chains."""
    return w.arrays(w.run_posterior())


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:  # bit for bit (NaN where NaN)
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_tensor_collectives_join_unequal_shares_and_fail_together(gathered):
    got = gathered["collectives"]
    rows = np.arange(9.0).reshape(3, 3)  # rank 0 sends row 0, rank 1 rows 0..1 (+10)
    np.testing.assert_array_equal(got["rows"], np.concatenate([rows[:1], rows[:2] + 10]))
    np.testing.assert_array_equal(got["flags"], [True, True, False, True, False])
    assert got["empty"].shape == (1, 0, 2)
    assert got["plain_ok"] and got["errors"].tolist() == [True, True, True]


def test_core_sampler_gives_the_same_samples_on_one_and_two_processes(gathered):
    assert_same(gathered["core"], w.core())


def test_lambda_and_closure_energies_run_under_torchrun(gathered):
    # the gather carries tensors only: a lambda or a closure energy is never pickled, and
    # the ULA energies computed after the gather come from each rank's own lambda
    assert_same(gathered["lambda"], w.lambda_energy())
    assert_same(gathered["closure"], w.closure_energy())


def test_posterior_sample_gives_the_same_draws_on_one_and_two_processes(gathered):
    assert_same(gathered["posterior"], one_process())


def test_a_two_rank_store_holds_every_draw_of_the_one_process_run(gathered):
    assert_same(gathered["stored"], one_process())
    assert np.isfinite(gathered["stored"]["init_loss"]).all()


def test_a_killed_rank_resumes_only_its_missing_chains(tmp_path):
    assert torchrun("store", tmp_path, env={"KILL_RANK1_AFTER": "35"}) != 0
    assert not (tmp_path / "calls1.txt").exists()  # rank 1 died before finishing
    assert torchrun("store", tmp_path) == 0
    assert_same(parts(tmp_path / "store.npz")["store"], one_process())
    model, data = w.problem()
    w.CALLS["n"] = 0
    w.posterior.sample(model, data, w.loss, chains=range(3, 5), **w.KW)  # rank 1's share
    assert int((tmp_path / "calls1.txt").read_text()) < w.CALLS["n"]  # it resumed mid-way


def test_calibrate_shares_settings_over_ranks(gathered):
    np.testing.assert_allclose(gathered["calibrate"]["table"], w.calibrate(), equal_nan=True)
