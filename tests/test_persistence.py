"""The files we write (``tl.sample`` and ``ebm.fit`` checkpoints, ``Chains.save``): loaded
without running code, checksummed, refused when they describe another call, compact, and
whole after a ``kill -9`` at any moment."""

import os
import random
import re
import signal
import sys
import time
import traceback
import zipfile

import pytest
import torch

import torchlangevin as tl
from torchlangevin import ebm
from torchlangevin.distributions import DoubleWell, Gaussian
from torchlangevin.persist import PersistError

from .conftest import GaussEnergy, gen

TARGET = Gaussian([0.0, 0.0])


@pytest.fixture(autouse=True)
def _one_thread():
    # after conftest's two: these runs are tiny, and the killed children run on one thread
    torch.set_num_threads(1)
    yield


def x0(c=4, seed=0):
    return torch.randn(c, 2, generator=gen(seed))


def _sample(path=None, kernel=None, x=None, n_steps=30, **kw):
    kw = {"seed": 3, "progress": False, "checkpoint_every": 1, **kw}
    return tl.sample(kernel or tl.MALA(TARGET, 0.5), x0() if x is None else x, n_steps,
                     checkpoint=path, **kw)


DATA = 2.0 + 0.5 * torch.randn(64, 1, generator=gen(1))


def _fit(path=None, epochs=3, data=DATA, **kw):
    model = GaussEnergy()
    kw = {"batch_size": 32, "lr": 0.05, "k_steps": 2, "buffer_size": 64, "seed": 3, **kw}
    history = ebm.fit(model, data, kernel=tl.Langevin(model, 0.01), epochs=epochs,
                      checkpoint=path, progress=False, **kw)
    return model, history


def _stop_at(step):
    def callback(t, state, info):
        if t == step:
            raise KeyboardInterrupt
    return callback


def _same_chains(a, b):
    assert torch.equal(a.samples, b.samples) and torch.equal(a.final, b.final)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.divergences, b.divergences)
    for name in ("acceptance_rate", "trajectory", "n_grads", "_accepted_at_draw"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y), name
    assert a.stats.keys() == b.stats.keys()
    assert all(torch.equal(a.stats[k], b.stats[k]) for k in a.stats)


def _same_fit(a, b):
    (model_a, hist_a), (model_b, hist_b) = a, b
    assert torch.equal(model_a.mu, model_b.mu) and torch.equal(model_a.log_sd, model_b.log_sd)
    assert hist_a.loss == hist_b.loss and hist_a.epoch_loss == hist_b.epoch_loss
    assert torch.equal(hist_a.buffer, hist_b.buffer)


# -- one file of each kind ---------------------------------------------------------------

def _sample_file(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _sample(path, callback=_stop_at(12))
    return path, lambda p: _sample(p)


def _fit_file(tmp_path):
    path = tmp_path / "fit.pt"
    _fit(path, epochs=2)
    return path, lambda p: _fit(p)


def _chains_file(tmp_path):
    path = tmp_path / "chains.pt"
    _sample(n_steps=10).save(path)
    return path, tl.Chains.load


FILES = [_sample_file, _fit_file, _chains_file]


class _WritesMarker:
    """Unpickling this opens (creates) ``path``: a stand-in for any code a pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("make", FILES, ids=["sample", "fit", "chains"])
def test_a_file_whose_loading_would_run_code_is_refused_and_the_code_never_runs(tmp_path,
                                                                                make):
    path, load = make(tmp_path)
    marker = tmp_path / "marker"
    payload = torch.load(path, weights_only=True)
    payload["payload"]["config" if "config" in payload["payload"] else "seed"] = \
        _WritesMarker(marker)
    torch.save(payload, path)
    with pytest.raises(PersistError, match=rf"{re.escape(str(path))}.*refusing to load"):
        load(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file does run code when unpickled freely
    assert marker.exists()


def _members(path):
    """``(name, first byte, size)`` of every record in the zip that ``torch.save`` wrote."""
    out = []
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            h = info.header_offset
            name_len = int.from_bytes(raw[h + 26:h + 28], "little")
            extra_len = int.from_bytes(raw[h + 28:h + 30], "little")
            out.append((info.filename, h + 30 + name_len + extra_len, info.file_size))
    return out


def _flip(raw, at, n=8):
    bad = bytearray(raw)
    bad[at:at + n] = bytes(b ^ 0xFF for b in bad[at:at + n])
    return bytes(bad)


@pytest.mark.parametrize("make", FILES, ids=["sample", "fit", "chains"])
def test_corrupted_or_truncated_files_raise_one_error_naming_the_file(tmp_path, make):
    path, load = make(tmp_path)
    raw = path.read_bytes()
    named = re.escape(str(path))
    records = [m for m in _members(path) if m[2] >= 8 and "/data/" in m[0] or
               m[0].endswith("data.pkl")]
    assert len(records) >= 3
    for _, start, size in records:  # 8 bytes flipped in the middle of every record
        path.write_bytes(_flip(raw, start + (size - 8) // 2))
        with pytest.raises(PersistError, match=rf"{named}.*(corrupted|refusing)"):
            load(path)
    for n in (0, 10, len(raw) // 2, len(raw) - 30, len(raw) - 1):
        path.write_bytes(raw[:n])
        with pytest.raises(PersistError, match=rf"{named}.*(truncated|corrupted)"):
            load(path)
    path.write_bytes(raw)
    load(path)  # the file itself was good


def test_random_byte_flips_are_refused_or_harmless(tmp_path):
    # anywhere in the file (zip headers included): an error naming the file, or, for bytes
    # nothing reads (timestamps, padding), exactly the original chains
    path = tmp_path / "chains.pt"
    ref = _sample(n_steps=10)
    ref.save(path)
    raw, rng, refused = path.read_bytes(), random.Random(0), 0
    for _ in range(40):
        path.write_bytes(_flip(raw, rng.randrange(len(raw) - 8)))
        try:
            back = tl.Chains.load(path)
        except PersistError as e:
            assert str(path) in str(e)
            refused += 1
            continue
        _same_chains(back, ref)
    assert refused >= 20  # most bytes are the tensors' and the pickle's


# -- configurations ----------------------------------------------------------------------

def _refused(call, *fields):
    with pytest.raises(ValueError) as info:
        call()
    for field in fields:
        assert field in str(info.value), (field, str(info.value))
    return str(info.value)


def test_a_resume_with_any_other_configuration_is_refused_naming_the_field(tmp_path):
    path, _ = _sample_file(tmp_path)
    changes = [
        (dict(kernel=tl.MALA(TARGET, 0.3)), "step_size: was 0.5, now 0.3"),
        (dict(kernel=tl.MALA(TARGET, 0.5, noise_scale=0.9)), "noise_scale: was 1.0, now 0.9"),
        (dict(kernel=tl.MALA(TARGET, 0.5, inv_mass=torch.tensor([1.0, 2.0]))),
         "inv_mass: was 1.0, now 'tensor float32 [2] sha256:"),
        (dict(kernel=tl.Langevin(TARGET, 0.5)),
         "kernel: was 'torchlangevin.kernels.mala.MALA', now "
         "'torchlangevin.kernels.langevin.Langevin'"),
        (dict(kernel=tl.MALA(Gaussian([0.0, 1.0]), 0.5)), "energy_probe: was ["),
        (dict(kernel=tl.MALA(DoubleWell(2), 0.5)), "energy: was 'torchlangevin.distributions."
                                                   "Gaussian', now 'torchlangevin.distributions."
                                                   "DoubleWell'"),
        (dict(x=x0(5)), "n_chains: was 4, now 5"),
        (dict(x=x0(seed=1)), "x0: was 'tensor float32 [4, 2] sha256:"),
        (dict(seed=4), "seed: was 3, now 4"),
        (dict(n_steps=40), "n_steps: was 30, now 40"),
        (dict(burn_in=5), "burn_in: was 0, now 5"),
        (dict(thin=2), "thin: was 1, now 2"),
        (dict(return_trajectory=True), "return_trajectory: was False, now True"),
    ]
    for kwargs, field in changes:
        message = _refused(lambda kw=kwargs: _sample(path, **kw), field)
        assert "was written by a different run (stopped at step 11 of 30)" in message
    # a lambda energy swapped for another of the same name: its values at x0 differ
    _refused(lambda: _sample(path, kernel=tl.MALA(lambda x: 0.5 * (x**2).sum(1), 0.5)),
             "energy: was 'torchlangevin.distributions.Gaussian', now 'tests.")


def test_a_finished_run_is_returned_to_the_same_call_and_refused_to_another(tmp_path):
    class Counting(Gaussian):
        grads = 0

        def grad(self, x):
            Counting.grads += 1
            return super().grad(x)

    path = tmp_path / "run.pt"
    target = Counting([0.0, 0.0])
    first = _sample(path, kernel=tl.MALA(target, 0.5), checkpoint_every=1000)
    grads = Counting.grads
    again = _sample(path, kernel=tl.MALA(target, 0.5), checkpoint_every=1000)
    assert Counting.grads - grads <= 1  # the start's gradient only: no step was rerun
    _same_chains(again, first)
    message = _refused(lambda: _sample(path, kernel=tl.MALA(target, 0.05)),
                       "holds a finished run of 30 steps", "step_size: was 0.5, now 0.05")
    assert "returned only to the call that made it" in message


def test_fit_refuses_another_configuration_by_name_and_returns_a_finished_run(tmp_path):
    path = tmp_path / "fit.pt"
    ref = _fit(path, epochs=3)
    _same_fit(_fit(path, epochs=3), ref)  # finished: the same call gets the run back
    _refused(lambda: _fit(path, epochs=2), "holds a finished run of 3 epochs",
             "asks for epochs=2, fewer than the 3 done", "Pass epochs >= 3")
    for kwargs, field in [(dict(seed=4), "seed: was 3, now 4"),
                          (dict(lr=0.01), "lr: was 0.05, now 0.01"),
                          (dict(batch_size=16), "batch_size: was 32, now 16"),
                          (dict(data=DATA + 1), "data: was 'tensor float32 [64, 1] sha256:"),
                          (dict(k_steps=3), "k_steps: was 2, now 3"),
                          (dict(objective="dsm"), "objective: was 'cd', now 'dsm'"),
                          (dict(buffer_size=128), "buffer_size: was 64, now 128")]:
        _refused(lambda kw=kwargs: _fit(path, **kw), field)


# -- only what is filled -----------------------------------------------------------------

def test_a_checkpoint_holds_only_the_filled_part_of_the_buffers(tmp_path):
    # 256 chains x 8 coordinates, 2,000 steps with the trajectory: the buffers take 33 MB;
    # at step 20 a checkpoint needs 20 trajectory rows and (20 - 7) // 3 = 4 draws
    kernel, x = tl.MALA(Gaussian(torch.zeros(8)), 0.5), torch.randn(256, 8, generator=gen(2))
    kw = dict(burn_in=7, thin=3, return_trajectory=True, checkpoint_every=20)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        _sample(path, kernel, x, 2000, callback=_stop_at(21), **kw)
    full = 2007 * 256 * 8 * 4 + 666 * 256 * (8 * 4 + 4 + 2 * 8)
    assert path.stat().st_size < 0.02 * full, path.stat().st_size
    # and the filled parts resume into the full buffers exactly (a shorter run of the same)
    with pytest.raises(KeyboardInterrupt):
        _sample(tmp_path / "short.pt", kernel, x[:16], 80, callback=_stop_at(21), **kw)
    short = tmp_path / "short.pt"
    _same_chains(_sample(short, kernel, x[:16], 80, **kw), _sample(None, kernel, x[:16], 80, **kw))


def test_nuts_statistics_resume_from_their_filled_part(tmp_path):
    kernel, path = tl.NUTS(TARGET, 0.5), tmp_path / "nuts.pt"
    with pytest.raises(KeyboardInterrupt):
        _sample(path, kernel, thin=2, callback=_stop_at(13), checkpoint_every=5)
    resumed = _sample(path, kernel, thin=2, checkpoint_every=5)
    _same_chains(resumed, _sample(None, kernel, thin=2))
    assert set(resumed.stats) >= {"tree_depth", "n_grads"}


# -- kill -9 at random moments -----------------------------------------------------------

def _start(work):
    """``work()`` in a forked process (no interpreter start-up: the kill lands in the work)."""
    pid = os.fork()
    if pid == 0:  # the child: run, then leave without pytest's exit handlers
        code = 0
        try:
            torch.set_num_threads(1)
            work()
        except BaseException:
            traceback.print_exc(file=sys.stderr)
            code = 1
        os._exit(code)
    return pid


def _finished(status):
    assert not os.WIFEXITED(status) or os.WEXITSTATUS(status) == 0, \
        "a run after a kill failed (its traceback is above)"
    return os.WIFEXITED(status)


def _run_killed(work, rng, max_delay, max_kills):
    """Start ``work`` and ``SIGKILL`` it after a random delay, again and again (each start
    resumes from what the last left) until a start finishes; after ``max_kills`` kills the
    last start runs to the end. Returns the kills that landed."""
    kills = 0
    while kills < max_kills:
        pid = _start(work)
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(pid, signal.SIGKILL)
        if _finished(os.waitpid(pid, 0)[1]):
            return kills
        kills += 1
    assert _finished(os.waitpid(_start(work), 0)[1])
    return kills


def _kill_rounds(tmp_path, name, work, check, seed, share=1 / 3, kills=20):
    """``kills`` kills at random moments over rounds of runs, each round from a fresh file
    and checked once a start finished it. The delays are uniform up to ``share`` of an
    uninterrupted run's time, measured first, so they fall anywhere in the run however
    fast the machine is (a killed start runs ``share / 2`` of the run on average)."""
    t = time.perf_counter()
    assert _finished(os.waitpid(_start(lambda: work(tmp_path / f"{name}.pt")), 0)[1])
    max_delay = (time.perf_counter() - t) * share
    rng, left, rounds = random.Random(seed), kills, 0
    while left > 0:
        path = tmp_path / f"{name}{rounds}.pt"
        left -= _run_killed(lambda p=path: work(p), rng, max_delay, left)
        check(path)
        rounds += 1
    return rounds


def test_kill_9_at_random_moments_then_rerun_equals_an_uninterrupted_run(tmp_path):
    # tiny runs saved at every step (sample), every epoch (fit), or saved over and over
    # (Chains): a kill lands anywhere, mid-step or mid-write; the next start resumes
    ref = _sample(n_steps=12)
    _kill_rounds(tmp_path, "sample", lambda p: _sample(p, n_steps=12),
                 lambda p: _same_chains(_sample(p, n_steps=12), ref), seed=0)

    fit_ref = _fit(epochs=5)
    _kill_rounds(tmp_path, "fit", lambda p: _fit(p, epochs=5),
                 lambda p: _same_fit(_fit(p, epochs=5), fit_ref), seed=1)

    _kill_saves(tmp_path / "chains.pt", seed=2)


def _kill_saves(path, seed, min_kills=20):
    """``Chains.save`` killed at random moments: each start writes the version the file does
    not hold; after a kill the file is the old version or the new one, never a part, and
    after a start that finished, the new one."""
    a, b = _sample(n_steps=10), _sample(n_steps=10, seed=5)

    def version():
        if not path.exists():
            return None
        back = tl.Chains.load(path)
        match = [v for v in (a, b) if torch.equal(back.samples, v.samples)]
        assert match, "the file holds neither version"
        _same_chains(back, match[0])
        return match[0]

    def save_the_other():
        (b if version() is a else a).save(path)

    took = []
    for _ in range(3):
        t = time.perf_counter()
        assert _finished(os.waitpid(_start(save_the_other), 0)[1])
        took.append(time.perf_counter() - t)
    max_delay = 0.7 * min(took)  # most kills land, in the load, the save or the rename
    rng, kills, starts, before = random.Random(seed), 0, 0, version()
    while kills < min_kills:
        new = b if before is a else a
        pid = _start(save_the_other)
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(pid, signal.SIGKILL)
        finished = _finished(os.waitpid(pid, 0)[1])
        kills, starts = kills + (not finished), starts + 1
        after = version()
        assert after is new if finished else (after is before or after is new)
        before = after
    return kills, starts


def test_a_file_without_checksums_or_of_another_kind_is_refused_by_name(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"samples": torch.zeros(2, 3, 1)}, path)  # how Chains.save wrote before
    with pytest.raises(PersistError, match="has no torchlangevin checksums.*weights_only=True"):
        tl.Chains.load(path)
    _sample(n_steps=5).save(path)
    with pytest.raises(PersistError, match="holds a 'Chains file', not a 'tl.sample checkpoint'"):
        _sample(path)
