"""posterior.sample's Zarr store: killed at seeded moments it resumes to the uninterrupted
result; a damaged store is named, never read as fill values."""

import itertools
import os
import shutil
import signal
import socket
import sys
import traceback

import numpy as np
import pytest
import torch
from torch import nn

from torchlangevin import posterior
from torchlangevin.posterior.store import NEXT_STEP, StoreDamaged

pytest.importorskip("zarr", minversion="3.1")
pytest.importorskip("xarray")

# burn-in and thinning put draws and checkpoints out of step with each other
KW = dict(lr=1e-3, num_chains=2, num_draws=8, num_burnin_steps=1, num_steps_bw_draws=2,
          batch_size=16, seed=4, checkpoint_every=2, mala_checks=2, progress=False)


def problem():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(48, 2, generator=g)
    y = X[:, :1] * X[:, 1:]
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)), (X, y)


def mse(out, batch):
    return 0.5 * (out - batch[1]).pow(2).squeeze(-1)


def run(store=None, loss=mse, **extra):
    model, data = problem()
    observables = {"probe": (data[0][:8], data[1][:8])}
    return posterior.sample(model, data, loss, store=store, observables=observables,
                            **KW, **extra).dataset


def arrays(ds) -> dict[str, np.ndarray]:
    return {name: np.asarray(v.values) for name, v in ds.variables.items()}


def assert_same(got, want) -> None:
    assert sorted(got) == sorted(want)
    for name in want:  # bit for bit, NaN where NaN
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


class Events:
    """Counts the moments a run can die at: every file put in place (``os.replace``: Zarr's
    chunks and metadata, the driver's checkpoint, the store's creation) and every loss
    evaluation; ``kill_at`` SIGKILLs the process just before that event."""

    def __init__(self, kill_at: int = 0) -> None:
        self.count, self.kill_at, self.replace = 0, kill_at, os.replace

    def tick(self) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def patched_replace(self, *args, **kwargs):
        self.tick()
        return self.replace(*args, **kwargs)

    def loss(self, out, batch):
        self.tick()
        return mse(out, batch)


def attempt(store, kill_at: int, **extra) -> int:
    """One run into ``store`` in a forked process killed at event ``kill_at``; its exit code
    (``-SIGKILL`` if the kill came first, 0 if the run finished)."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest teardown, whatever happens
        code = 1
        try:
            signal.alarm(60)  # a child that hangs ends, and the test says so
            torch.set_num_threads(1)  # the parent's OpenMP workers did not survive the fork
            events = Events(kill_at)
            os.replace = events.patched_replace
            run(store, loss=_named(events.loss), **extra)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _named(fn):
    """``fn`` under ``mse``'s name: the same loss as far as the store's fingerprint goes."""
    def loss(out, batch):
        return fn(out, batch)

    loss.__qualname__ = mse.__qualname__
    return loss


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run into a store, the events it passed through, and its store."""
    store = tmp_path_factory.mktemp("ref") / "run.zarr"
    events = Events()
    real, os.replace = os.replace, events.patched_replace
    try:
        stored = arrays(run(store, loss=_named(events.loss)))
    finally:
        os.replace = real
    return stored, events.count, store


def test_an_uninterrupted_store_run_equals_the_run_in_memory(reference):
    stored, _, _ = reference
    assert_same(stored, arrays(run()))
    assert np.isfinite(stored["init_loss"]).all() and np.isfinite(stored["metrics_loss"]).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kill_9_at_seeded_random_moments_resumes_to_the_uninterrupted_result(
        reference, tmp_path):
    # stores run to the end under kills at events drawn uniformly from the uninterrupted run's
    # (a resumed run passes fewer, so some attempts finish first); >= 20 kills in all, the
    # first of each store inside its creation or first writes
    want, n_events, _ = reference
    rng = np.random.default_rng(23)
    kills, stores = 0, 0
    while kills < 20:
        store = tmp_path / f"run{stores}.zarr"
        stores += 1
        for tries in itertools.count():
            kill_at = int(rng.integers(1, 40 if tries == 0 else n_events + 1))
            code = attempt(store, kill_at)
            assert code in (0, -signal.SIGKILL), f"the run failed (exit {code}); see stderr"
            if code == 0:
                break
            kills += 1
            assert tries < 60, "no progress after 60 kills"
        assert_same(arrays(run(store)), want)
        assert not list(tmp_path.glob("*.creating-*"))  # killed creations cleared
    assert stores >= 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_checkpoint_ahead_of_the_store_starts_its_chains_over(reference, tmp_path):
    # an interrupt saves the driver's checkpoint and then flushes the records; killed in
    # between, the checkpoint is further on than the store's next_step
    import zarr

    want, n_events, _ = reference
    store = tmp_path / "run.zarr"
    assert attempt(store, n_events - 20) == -signal.SIGKILL  # past the last checkpoint
    assert store.with_name("run.zarr.chains-0-2.pt").exists()
    zarr.open_group(store, mode="r+")[NEXT_STEP][:] = 4
    with pytest.warns(RuntimeWarning, match="further on than the store's records"):
        assert_same(arrays(run(store)), want)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_chains_run_in_blocks_resume_after_kill_9_to_the_same_records(tmp_path):
    # chains_per_call=1: two blocks of one chain, run one after the other into one store,
    # each with its own checkpoint. Killed at seeded moments, the store resumes to the
    # in-memory blocked run bit for bit; that run equals the all-at-once one to float32
    # rounding (a block of one chain calls the model without vmap).
    blocked, together = run(chains_per_call=1), run()
    assert blocked.attrs["chains_per_block"] == "1" and together.attrs["chains_per_block"] == "2"
    for name in ("sampling_loss", "metrics_loss", "loss_probe", "metrics_mala_accept"):
        np.testing.assert_allclose(blocked[name].values, together[name].values, rtol=1e-5,
                                   atol=1e-6, err_msg=name)
    events = Events()  # the moments the uninterrupted blocked run into a store passes
    real, os.replace = os.replace, events.patched_replace
    try:
        assert_same(arrays(run(tmp_path / "ref.zarr", _named(events.loss), chains_per_call=1)),
                    arrays(blocked))
    finally:
        os.replace = real
    rng, kills = np.random.default_rng(5), 0
    for stores in itertools.count():  # stores run to the end under kills, >= 6 kills in all
        store = tmp_path / f"run{stores}.zarr"
        for tries in itertools.count():
            code = attempt(store, int(rng.integers(1, events.count + 1)), chains_per_call=1)
            assert code in (0, -signal.SIGKILL), f"the run failed (exit {code}); see stderr"
            if code == 0:
                break
            kills += 1
            assert tries < 60, "no progress after 60 kills"
        assert_same(arrays(run(store, chains_per_call=1)), arrays(blocked))
        if kills >= 6:
            break


# ---- integrity -----------------------------------------------------------------------------

def damaged_copy(reference, tmp_path):
    store = tmp_path / "run.zarr"
    shutil.copytree(reference[2], store)
    return store


def first_chunk(store, name):
    return next(p for p in sorted((store / name / "c").rglob("*")) if p.is_file())


@pytest.mark.parametrize("name", ["sampling_loss", "nonfinite_step"])
def test_a_deleted_chunk_names_the_store_and_array(reference, tmp_path, name):
    # a lost sampling_loss chunk would read as NaN losses (a 'divergence'); nonfinite_step's
    # chunks hold only the fill value -1, which Zarr by default does not write at all
    store = damaged_copy(reference, tmp_path)
    first_chunk(store, name).unlink()
    with pytest.raises(StoreDamaged, match=rf"run\.zarr.*'{name}' has lost its chunk"):
        run(store)


def test_a_corrupted_chunk_fails_its_checksum_by_name(reference, tmp_path):
    store = damaged_copy(reference, tmp_path)
    chunk = first_chunk(store, "metrics_loss")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 8] = bytes(b ^ 0xFF for b in raw[len(raw) // 2:][:8])
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreDamaged, match=r"run\.zarr.*'metrics_loss' cannot be read"):
        run(store)


def test_a_damaged_commit_marker_or_a_resumed_chunk_is_named(reference, tmp_path):
    import zarr

    store = damaged_copy(reference, tmp_path)
    zarr.open_group(store, mode="r+")[NEXT_STEP][:] = 4  # as if killed after one checkpoint
    first_chunk(store, "metrics_grad_norm").unlink()
    with pytest.raises(StoreDamaged, match=r"'metrics_grad_norm' has lost its chunk"):
        run(store)  # the resume reads the records before step 4: one is gone
    first_chunk(store, NEXT_STEP).write_bytes(b"\x00" * 3)  # truncated
    with pytest.raises(StoreDamaged, match=r"run\.zarr.*'state/next_step' cannot be read"):
        run(store)


def test_a_half_created_store_is_laid_out_again_and_foreign_ones_refused(reference, tmp_path):
    store = tmp_path / "run.zarr"
    partial = store.with_name(f"run.zarr.creating-{socket.gethostname()}-{2**22 + 1}")
    (partial / "sampling_loss").mkdir(parents=True)  # a creation killed half-way
    (partial / "zarr.json").write_text("{")
    assert_same(arrays(run(store)), reference[0])
    assert not partial.exists()
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not a Zarr store"):
        run(other)
    import zarr

    zarr.open_group(tmp_path / "old.zarr", mode="w", attributes={"fingerprint": "x"})
    with pytest.raises(ValueError, match="not written by this version"):
        run(tmp_path / "old.zarr")


def test_every_record_is_fsynced_before_the_commit_marker_that_covers_it(tmp_path,
                                                                          monkeypatch):
    # a power loss keeps only what was fsynced: each chunk Zarr puts in place must reach
    # the disk before the next commit marker is written, and the marker itself after it
    log, real_replace, real_fsync = [], os.replace, os.fsync

    def replace(src, dst, *a, **k):
        log.append(("put", os.path.realpath(dst)))
        return real_replace(src, dst, *a, **k)

    def fsync(fd):
        log.append(("sync", os.path.realpath(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    store = tmp_path / "run.zarr"
    run(store)
    root, marker = os.path.realpath(store), os.path.realpath(store / NEXT_STEP)
    pending, commits = set(), 0  # chunks put in place and not yet synced
    for kind, path in log:
        if not path.startswith(root):  # the store, or the temporary one it is created as
            continue
        if kind == "sync":
            pending.discard(path)
        elif path == root or path.startswith(marker + os.sep):  # created, or committed
            assert not pending, f"{path} put in place before these were synced: {pending}"
            commits += 1
        elif "/c/" in path:
            pending.add(path)
    assert commits >= 5 and not pending


def test_sync_tree_skips_a_file_another_writer_renamed_away(tmp_path, monkeypatch):
    # two ranks write one store: rank 0's walk lists rank 1's temporary chunk, which is
    # renamed into place before rank 0 opens it (the race test_distributed met under
    # load); the walk syncs the rest and does not fail
    from torchlangevin import util

    (tmp_path / "c").mkdir()
    for name in ("0.0", "0.1.partial", "0.2"):
        (tmp_path / "c" / name).write_bytes(b"x")
    synced, real_open = [], open

    def racing_open(path, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise FileNotFoundError(path)
        synced.append(os.path.basename(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", racing_open)
    util.sync_tree(tmp_path, 0)
    assert sorted(synced) == ["0.0", "0.2"]
