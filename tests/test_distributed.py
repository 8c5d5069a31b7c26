"""Chains across processes (gloo, 2 CPU processes on one machine via torchrun)."""

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


def test_core_sampler_gives_the_same_samples_on_one_and_two_processes(tmp_path):
    torchrun("core", tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "core.npy"), w.core())


def test_posterior_sample_gives_the_same_draws_on_one_and_two_processes(tmp_path):
    torchrun("posterior", tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "posterior.npy"),
                                  w.run_posterior()["sampling_loss"].values)


def test_a_killed_rank_resumes_only_its_missing_chains(tmp_path):
    assert torchrun("store", tmp_path, env={"KILL_RANK1_AFTER": "50"}) != 0
    assert not (tmp_path / "calls1.txt").exists()  # rank 1 died before finishing
    assert torchrun("store", tmp_path) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "store.npy"),
                                  w.run_posterior()["sampling_loss"].values)
    model, data = w.problem()
    w.CALLS["n"] = 0
    w.posterior.sample(model, data, w.loss, chains=range(2, 4), **w.KW)  # rank 1's share
    assert int((tmp_path / "calls1.txt").read_text()) < w.CALLS["n"]  # it resumed mid-way


def test_calibrate_shares_settings_over_ranks(tmp_path):
    torchrun("calibrate", tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "calibrate.npy"),
                               w.calibrate()[["lr", "llc"]].to_numpy(float), equal_nan=True)
