"""Warm-up that tunes step size and inverse mass (diagonal, dense or low-rank) for MALA,
HMC and NUTS.

Step size: dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5) towards a
target acceptance (MALA 0.574, HMC 0.8), on ``log eps`` per chain:

    H_m = (1 - 1/(m + t0)) H_{m-1} + (delta - alpha_m) / (m + t0)
    log eps_m = mu - sqrt(m) / gamma * H_m,   mu = log(10 eps_0)
    log eps_bar_m = m^-kappa log eps_m + (1 - m^-kappa) log eps_bar_{m-1}

With ``per_chain=False`` every chain uses the acceptance averaged over chains.

Inverse mass: Stan's windows (a fast initial buffer, slow windows doubling in length,
a fast terminal buffer). At the end of each slow window ``M^{-1}`` becomes the
regularised variance of the positions seen in it, ``n/(n+5) var + 1e-3 * 5/(n+5)``, and
dual averaging restarts. The variance is pooled over chains, or with
``per_chain_mass=True`` each chain's own: with ``per_chain=True`` too, every chain runs
its own window adaptation, as BlackJAX's ``window_adaptation`` vmapped over chains does.
Pooled over chains, the variance is the within-chain one, averaged over the chains kept
(the spread between chains' locations never enters), and a dense or low-rank estimate is
the pooled within-chain correlation scaled by those variances:

    var_j = sum_{c in K} sum_t (x_ctj - xbar_cj)^2 / (|K| (n - 1)).

Outlier chains: at the first window's start, at every window's end and at the end, a
chain whose mean acceptance since the last check is below a tenth of the median chain's,
or whose energy is above the chains' median by more than 20 robust scales
(``max(1.4826 MAD, sqrt(D/2))``), is an outlier (at most a minority of the chains are
flagged). It is left out of that window's mass and of the pooled step size, and (by
default) re-initialised from the full state of a typical chain (its step size and dual
averaging too); every case is reported in ``Adapted.outliers`` and an
:class:`OutlierChainWarning`.
A chain's own window variance needs a chain that crosses its target within the window:
HMC's does (on a 100-D Gaussian with sds 0.1-10 the per-chain estimates are within 6% on
average over 64 chains), MALA's does not (a factor of 4 low on the widest coordinates).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .blocks import NoiseStream, block_length, run_block
from .kernels.base import Kernel, State, check_compilable
from .mass import DenseMass, LowRankMass
from .schedules import Schedule
from .util import integer, seeded_generator

__all__ = ["adapt", "Adapted", "DualAveraging", "mass_windows", "reasonable_step_size",
           "Outlier", "OutlierChainWarning", "outlier_chains"]


class DualAveraging(NamedTuple):
    """Dual averaging of ``log eps`` per chain: ``(C,)`` tensors and the count ``m``
    (a 0-dim tensor), updated functionally so a compiled warm-up can carry it."""

    mu: Tensor
    h_bar: Tensor
    log_bar: Tensor
    m: Tensor

    @classmethod
    def start(cls, step_size: Tensor) -> DualAveraging:
        """Start (or restart) at ``step_size``: ``mu = log(10 eps_0)``."""
        return cls(torch.log(10 * step_size), torch.zeros_like(step_size),
                   torch.log(step_size), step_size.new_zeros((), dtype=torch.float64))

    def update(self, accept_prob: Tensor, target: float, gamma: float = 0.05,
               t0: float = 10.0, kappa: float = 0.75) -> tuple[DualAveraging, Tensor]:
        """Feed this step's acceptance probabilities; returns the new state and the next
        step size ``exp(log eps_m)``."""
        m = self.m + 1
        w = 1.0 / (m + t0)
        h_bar = (1 - w) * self.h_bar + w * (target - accept_prob)
        log_eps = self.mu - m.sqrt() / gamma * h_bar
        eta = m ** -kappa
        log_bar = eta * log_eps + (1 - eta) * self.log_bar
        return DualAveraging(self.mu, h_bar, log_bar, m), torch.exp(log_eps)

    @property
    def final(self) -> Tensor:
        """The averaged step size, ``exp(log eps_bar)``."""
        return torch.exp(self.log_bar)


def mass_windows(n_steps: int, initial: int = 75, terminal: int = 50,
                 base: int = 25) -> list[tuple[int, int]]:
    """Slow windows ``[start, end)`` as in Stan: sizes ``base, 2 base, ...``; the last one
    stretches to ``n_steps - terminal``. Short runs scale the buffers to 15% / 10%."""
    if n_steps < initial + terminal + base:
        initial, terminal = int(0.15 * n_steps), int(0.1 * n_steps)
        base = n_steps - initial - terminal
    windows, start, size = [], initial, base
    while start < n_steps - terminal:
        end = start + size
        if end + 2 * size > n_steps - terminal:
            end = n_steps - terminal
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class OutlierChainWarning(UserWarning):
    """A chain was stuck or far from the others during warm-up (see ``Adapted.outliers``)."""


class Outlier(NamedTuple):
    """A chain found stuck or far away at a warm-up check: the step, the chain, why
    (``"stuck"``: acceptance near 0; ``"far"``: energy far above the median), its mean
    acceptance since the last check and energy, and the chain it was re-initialised from
    (``-1`` where it was only left out)."""

    step: int
    chain: int
    reason: str
    acceptance: float
    energy: float
    donor: int


#: what :func:`adapt` does with an outlier chain
OUTLIER_ACTIONS = ("reinit", "exclude", "keep")


@dataclass
class Adapted:
    """Result of :func:`adapt`: the tuned kernel and where the chains are."""

    kernel: Kernel
    state: State
    step_size: float | Tensor
    inv_mass: float | Tensor
    acceptance: Tensor  # mean acceptance probability at each warm-up step, (n_steps,)
    #: gradient evaluations per chain ``(C,)`` the warm-up spent, for kernels that report
    #: them (``None`` for the others)
    n_grads: Tensor | None
    #: the chains found stuck or far away at the warm-up's checks, and what was done
    outliers: tuple[Outlier, ...] = field(default=(), kw_only=True)

    @property
    def x(self) -> Tensor:
        return self.state.x

    @property
    def outlier_chains(self) -> list[int]:
        """The chains ever flagged as outliers during the warm-up, sorted."""
        return sorted({o.chain for o in self.outliers})

    @property
    def params(self) -> Any:
        """The tuned parameters (``kernel.params``)."""
        return self.kernel.params


#: ``state.x`` and ``state.energy`` of a warm-up state that carries the chains' state as
#: ``state.chains`` (what the block runner records of each step)
chains_x = property(lambda self: self.chains.x, doc="The chains' positions.")
chains_energy = property(lambda self: self.chains.energy, doc="The chains' energies.")


class WarmupState(NamedTuple):
    """What a warm-up step carries: the chains, the step size in use, the dual averaging
    and each chain's weight ``(C,)`` in the pooled acceptance (0 for an excluded chain)."""

    chains: Any
    eps: Tensor
    averaging: DualAveraging
    weight: Tensor | None = None

    x = chains_x
    energy = chains_energy


class WarmupInfo(NamedTuple):
    """Per step of the warm-up: the chains' acceptance probabilities ``(C,)`` and, for
    kernels that report them, their gradient evaluations."""

    acceptance_prob: Tensor
    n_grads: Tensor | None = None


class Warmup:
    """The warm-up as a kernel: ``kernel``'s step at the carried step size, then one dual
    averaging update of it (towards ``target`` acceptance, per chain or on the mean)."""

    has_accept_step = False
    couples_chains = False

    def __init__(self, kernel: Any, target: float, per_chain: bool) -> None:
        self.kernel, self.target, self.per_chain = kernel, target, per_chain
        self.needs_batch = getattr(kernel, "needs_batch", False)
        self.compilable = getattr(kernel, "compilable", True)

    def noise_size(self, state: WarmupState) -> int:
        return self.kernel.noise_size(state.chains)

    def step(self, state: WarmupState, noise: Tensor, params: Any, batch: Any = None
             ) -> tuple[WarmupState, WarmupInfo]:
        chains, info = self.kernel.step(state.chains, noise, params._replace(step_size=state.eps),
                                        batch)
        prob = info.acceptance_prob
        averaging, eps = state.averaging.update(
            prob if self.per_chain else _pooled(prob, state.weight).expand_as(prob),
            self.target)
        return (WarmupState(chains, eps, averaging, state.weight),
                WarmupInfo(prob, getattr(info, "n_grads", None)))


def _pooled(prob: Tensor, weight: Tensor | None) -> Tensor:
    """The acceptance averaged over the chains kept (weight 1)."""
    if weight is None:
        return prob.mean()
    return (prob * weight).sum() / weight.sum()


MASS_KINDS = ("diag", "dense", "low_rank")


def _mass_kind(adapt_mass: bool | str, per_chain_mass: bool) -> str | None:
    """``adapt_mass`` as one of :data:`MASS_KINDS`, or ``None`` for no mass tuning."""
    if adapt_mass is True:
        return "diag"
    if adapt_mass is False:
        return None
    if adapt_mass not in MASS_KINDS:
        raise ValueError(f"adapt_mass must be True, False or one of {MASS_KINDS}; got "
                         f"{adapt_mass!r}")
    if per_chain_mass and adapt_mass != "diag":
        raise ValueError(f"per_chain_mass=True tunes a diagonal mass per chain; got "
                         f"adapt_mass={adapt_mass!r}")
    return adapt_mass


def _check(kernel: Any, n_steps: int, target_accept: float | None, adapt_mass: bool | str,
           per_chain_mass: bool) -> float:
    """Fail clearly on what ``adapt`` cannot do; returns the target acceptance."""
    integer("n_steps", n_steps, 10)
    _mass_kind(adapt_mass, per_chain_mass)
    if not getattr(kernel, "has_accept_step", False):
        raise TypeError(f"adapt needs a kernel with an accept step (MALA, HMC); "
                        f"got {type(kernel).__name__}")
    params = getattr(kernel, "params", None)
    fields = getattr(params, "_fields", ())
    if "step_size" not in fields or "inv_mass" not in fields:
        raise TypeError(f"adapt tunes params.step_size and params.inv_mass; "
                        f"{type(kernel).__name__}'s parameters are {fields}")
    for name in ("step_size", "noise_scale"):
        if isinstance(getattr(params, name, None), Schedule):
            raise TypeError(f"adapt tunes a float or per-chain step_size at a fixed "
                            f"noise_scale; got the {name} schedule {getattr(params, name)!r}")
    if per_chain_mass and not adapt_mass:
        raise ValueError("per_chain_mass=True tunes the mass per chain; it needs "
                         "adapt_mass=True")
    if target_accept is None:
        target_accept = getattr(kernel, "target_accept", None)
        if target_accept is None:
            raise ValueError(f"no default target_accept for a {type(kernel).__name__}; "
                             f"pass target_accept")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept!r}")
    return float(target_accept)


def adapt(kernel: Kernel, x0: Tensor, n_steps: int = 1000, *,
          target_accept: float | None = None, adapt_mass: bool | str = True,
          per_chain: bool = False, per_chain_mass: bool = False, mass_rank: int = 10,
          find_step_size: bool = True, seed: int | None = None,
          compile: bool = False, outliers: str = "reinit") -> Adapted:  # noqa: A002
    """Warm up ``kernel`` from ``x0`` for ``n_steps`` and return it tuned.

    Args:
        kernel: a ``MALA``, ``HMC`` or ``NUTS`` (any kernel whose ``Info`` has an
            acceptance and whose params have ``step_size`` and ``inv_mass``).
        x0: initial states ``(C, *event)``.
        n_steps: warm-up steps (they are burn-in: discard them).
        target_accept: defaults to the kernel's ``target_accept`` (MALA 0.574, HMC 0.8).
        adapt_mass: also tune ``inv_mass`` in Stan's windows: ``True`` or ``"diag"`` for a
            diagonal, ``"dense"`` for a :class:`~torchlangevin.mass.DenseMass` (the
            window's covariance), ``"low_rank"`` for a
            :class:`~torchlangevin.mass.LowRankMass` (the diagonal and the ``mass_rank``
            eigenvectors of the window's correlation furthest from 1, as nutpie).
        per_chain: one step size per chain (a ``(C,)`` tensor) instead of a shared float.
        per_chain_mass: one inverse mass per chain (``(C, *event)``), each from that
            chain's own draws, instead of one from all chains' (needs ``adapt_mass``).
        mass_rank: the rank of a ``"low_rank"`` mass.
        find_step_size: first move the starting step size by factors of 2 until one short
            move's acceptance (one leapfrog step, one NUTS leaf; the median over chains)
            crosses 1/2 (Hoffman & Gelman 2014, Alg. 4), as Stan and BlackJAX do: a start
            far too small otherwise costs NUTS deep trees for the first hundred steps.
        seed: seeds the warm-up's generator.
        compile: run the warm-up's blocks compiled, as ``sample(..., compile=True)``
            does: same noise, same result to float rounding.
        outliers: what to do with a chain found stuck or far away at a check (the first
            window's start, each window's end, the end): ``"reinit"`` (default) leaves it
            out of that window's mass and copies a typical chain's state into it;
            ``"exclude"`` leaves it out of the mass and the pooled step size from then
            on; ``"keep"`` only reports it. Either way it is in ``Adapted.outliers`` and
            an :class:`OutlierChainWarning`.

    Then ``tl.sample(adapted.kernel, adapted.x, n_steps)`` samples with the tuned values.
    """
    target = _check(kernel, n_steps, target_accept, adapt_mass, per_chain_mass)
    if outliers not in OUTLIER_ACTIONS:
        raise ValueError(f"outliers must be one of {OUTLIER_ACTIONS}; got {outliers!r}")
    if compile:
        check_compilable(kernel, "the warm-up")
    params = kernel.params
    gen = seeded_generator(seed, x0.device)
    with torch.no_grad():
        state = kernel.init(x0, params)
        _check_finite_somewhere(state)
        x = state.x
        c = x.shape[0]
        eps = torch.as_tensor(params.step_size, dtype=x.dtype, device=x.device).expand(c).clone()
        if find_step_size:
            eps = eps * reasonable_step_size(kernel, state, params, gen) / eps.mean()
        kind = _mass_kind(adapt_mass, per_chain_mass)
        inv_mass = params.inv_mass
        if kind == "diag":  # a tensor from the start: one compiled graph for every window
            inv_mass = torch.as_tensor(inv_mass, dtype=x.dtype, device=x.device)
            inv_mass = inv_mass.expand(x.shape if per_chain_mass else x.shape[1:]).clone()
        warm = WarmupState(state, eps, DualAveraging.start(eps), torch.ones_like(eps))
        run = _WarmupRun(Warmup(kernel, target, per_chain), warm, n_steps, kind,
                         per_chain_mass, gen, compile, integer("mass_rank", mass_rank, 1))
        run.action = outliers
        warm, inv_mass, prob, grads = run.loop(params, inv_mass)
    _warn_outliers(run.outliers, outliers)
    final = warm.averaging.final
    step_size: float | Tensor = final if per_chain else float(final.mean())
    tuned = kernel.replace(step_size=step_size, inv_mass=inv_mass)
    return Adapted(tuned, warm.chains._replace(step=0), step_size, inv_mass,
                   prob.double().mean(1), grads, outliers=tuple(run.outliers))


def reasonable_step_size(kernel: Any, state: Any, params: Any, generator: torch.Generator,
                         max_halvings: int = 50) -> float:
    """Hoffman & Gelman (2014), Alg. 4: from ``params.step_size``, double (or halve) ``eps``
    while the acceptance of one short move, ``a(eps)`` (the median over chains), stays
    above (below) 1/2; the first ``eps`` across is returned. A short move is the kernel's
    step with one leapfrog step (``n_leapfrog_steps = 1``, ``max_tree_depth = 1``, no
    jitter), one fixed draw of noise for all tries."""
    short = {name: value for name, value in (("n_leapfrog_steps", 1), ("max_tree_depth", 1),
                                             ("jitter", 0.0)) if name in params._fields}
    probe = params._replace(**short)
    x = state.x
    noise = torch.randn(x.shape[0], kernel.noise_size(state), generator=generator,
                        dtype=x.dtype, device=x.device)

    def accept(eps: float) -> float:
        _, info = kernel.step(state, noise, probe._replace(step_size=eps))
        return float(info.acceptance_prob.nan_to_num(0.0).median())

    eps = start = float(torch.as_tensor(params.step_size, dtype=torch.float64).mean())
    up = accept(eps) > 0.5
    for _ in range(max_halvings):
        eps = eps * 2.0 if up else eps / 2.0
        if (accept(eps) > 0.5) != up:
            return eps
    if not up:  # no move is ever accepted: the energy or its gradient is not finite there
        raise ValueError(f"adapt: no step size down to {eps:.3g} (from {start:g}, halved "
                         f"{max_halvings} times) has one short move accepted for half the "
                         f"chains: the energy or its gradient is NaN/Inf, or jumps, wherever "
                         f"the chains step; check the energy near the starting points")
    return eps


def _check_finite_somewhere(state: Any) -> None:
    """Fail if the energy (or its gradient) is NaN/Inf at every starting point: there is
    nothing to tune on (dual averaging would drive the step size to 0)."""
    energy, grad = getattr(state, "energy", None), getattr(state, "grad", None)
    if energy is None:
        return
    ok = torch.isfinite(energy)
    if grad is not None:
        ok &= torch.isfinite(grad.reshape(grad.shape[0], -1)).all(1)
    if not bool(ok.any()):
        raise ValueError(f"adapt: the energy or its gradient is NaN/Inf at all "
                         f"{energy.shape[0]} starting points (energy of chain 0: "
                         f"{float(energy[0])}); start the chains where the target is defined")


class _WarmupRun:
    """The warm-up's blocks: up to each mass update, blocks of the block runner."""

    def __init__(self, warmup: Warmup, warm: WarmupState, n_steps: int, kind: str | None,
                 per_chain_mass: bool, generator: torch.Generator, compile: bool,  # noqa: A002
                 rank: int) -> None:
        self.warmup, self.warm, self.n_steps = warmup, warm, n_steps
        self.kind, self.rank = kind, rank
        x = warm.x
        self.windows = mass_windows(n_steps) if kind is not None else []
        self.in_window = torch.zeros(n_steps, dtype=torch.bool, device=x.device)
        for start, end in self.windows:
            self.in_window[start:end] = True
        self.per_chain_mass = per_chain_mass
        self.length = block_length(x.numel(), x.shape[0] * warmup.noise_size(warm))
        self.noise = NoiseStream([generator], x.shape[0], warmup.noise_size(warm), x,
                                 self.length, n_steps)
        self.blocks = None
        self.action = "reinit"
        self.outliers: list[Outlier] = []
        self.donors: Tensor | None = None
        if compile:
            from .compiled import CompiledBlocks  # private torch parts: only when asked

            self.blocks = CompiledBlocks(x.device, x.numel())

    def loop(self, params: Any, inv_mass: float | Tensor):
        warm, x = self.warm, self.warm.x
        prob = torch.empty((self.n_steps, x.shape[0]), dtype=x.dtype, device=x.device)
        ends = {end for _, end in self.windows}
        windows = mass_windows(self.n_steps)  # outliers are checked at these even without mass
        checks = sorted({e for _, e in windows} | {self.n_steps} | {windows[0][0]})
        sums = _WindowSums(x, self.per_chain_mass, self.kind)
        grads = None
        m = 0
        for stop in checks:  # the next mass update or outlier check
            for i in range(m, stop, self.length):
                j = min(i + self.length, stop)
                warm, trace = self._block(warm, params._replace(inv_mass=inv_mass), j - i)
                prob[i:j] = trace.info.acceptance_prob
                if trace.info.n_grads is not None:
                    block_grads = trace.info.n_grads.sum(0)
                    grads = block_grads if grads is None else grads + block_grads
                if self.windows:
                    sums.add(trace.x[self.in_window[i:j]])
            bad = self._outliers(warm, prob[m:stop], stop)
            m = stop
            if m in ends:
                inv_mass = sums.estimate(self.rank, x.dtype, ~bad)
                sums = _WindowSums(x, self.per_chain_mass, self.kind)
            warm, inv_mass = self._treat(warm, inv_mass, bad)
            if m in ends:
                warm = warm._replace(averaging=DualAveraging.start(warm.eps))
        return warm, inv_mass, prob, grads

    def _block(self, warm: WarmupState, params: Any, k: int) -> tuple[WarmupState, Any]:
        noise = self.noise.take(k)
        if self.blocks is not None:
            return self.blocks(self.warmup, warm, params, noise)
        return run_block(self.warmup, warm, params, noise)

    def _outliers(self, warm: WarmupState, prob: Tensor, step: int) -> Tensor:
        """Flag (and record) the outlier chains from the acceptance since the last check."""
        accept = prob.double().nan_to_num(0.0).mean(0)
        energy = warm.energy.double() if warm.energy is not None else None
        bad, reasons = outlier_chains(accept, energy, warm.x[0].numel())
        if bad.any() and self.action != "keep":
            self.donors = _donors(bad, energy)
        for c in bad.nonzero().flatten().tolist():
            e = float(energy[c]) if energy is not None else math.nan
            donor = int(self.donors[c]) if self.action == "reinit" else -1
            self.outliers.append(Outlier(step, c, reasons[c], float(accept[c]), e, donor))
        return bad if self.action != "keep" else torch.zeros_like(bad)

    def _treat(self, warm: WarmupState, inv_mass: Any, bad: Tensor) -> tuple[WarmupState, Any]:
        """Re-initialise the flagged chains from their donors, or give them weight 0."""
        if not bad.any():
            return warm, inv_mass
        if self.action == "exclude":
            return warm._replace(weight=warm.weight * (~bad).to(warm.weight.dtype)), inv_mass
        c = bad.shape[0]
        rows = torch.arange(c, device=bad.device)
        source = torch.where(bad, self.donors.to(bad.device), rows)
        warm = _take_rows(warm, source, c)
        if self.per_chain_mass and isinstance(inv_mass, Tensor) and inv_mass.shape[:1] == (c,):
            inv_mass = inv_mass[source]
        return warm, inv_mass


def outlier_chains(acceptance: Tensor, energy: Tensor | None, dim: int
                   ) -> tuple[Tensor, dict[int, str]]:
    """The chains that are stuck or far away, ``(C,)`` bool, and why, by chain.

    Stuck: mean acceptance below a tenth of the median chain's. Far: energy above the
    median by more than 20 robust scales, ``E_c - med(E) > 20 max(1.4826 MAD(E),
    sqrt(D/2))`` (``sqrt(D/2)`` is the sd of a D-dimensional Gaussian's energy), or not
    finite. Fewer than 4 chains, or flags on half the chains or more, flag nothing: the
    median is then no reference.
    """
    c = acceptance.shape[0]
    bad = torch.zeros(c, dtype=torch.bool, device=acceptance.device)
    reasons: dict[int, str] = {}
    if c < 4:
        return bad, reasons
    stuck = acceptance < 0.1 * acceptance.median()
    far = torch.zeros_like(stuck)
    if energy is not None:
        finite = torch.isfinite(energy)
        med = energy[finite].median() if finite.any() else energy.new_zeros(())
        mad = (energy[finite] - med).abs().median() if finite.any() else med
        scale = torch.maximum(1.4826 * mad, energy.new_tensor(math.sqrt(dim / 2)))
        far = ~finite | (energy - med > 20 * scale)
    bad = stuck | far
    if 2 * int(bad.sum()) >= c:
        return torch.zeros_like(bad), reasons
    for i in bad.nonzero().flatten().tolist():
        reasons[i] = "stuck" if bool(stuck[i]) else "far"
    return bad, reasons


def _donors(bad: Tensor, energy: Tensor | None) -> Tensor:
    """For each chain, a good chain to copy: the good chains in order of how typical their
    energy is (closest to the median first), dealt out to the bad chains in turn."""
    good = (~bad).nonzero().flatten()
    if energy is not None:
        e = energy[good]
        good = good[(e - e.median()).abs().argsort()]
    donors = torch.arange(bad.shape[0], device=bad.device)
    flagged = bad.nonzero().flatten()
    donors[flagged] = good[torch.arange(flagged.numel(), device=bad.device) % good.numel()]
    return donors


def _take_rows(tree: Any, source: Tensor, c: int) -> Any:
    """``tree`` with every chain-first tensor's rows taken from ``source`` (``(C,)``)."""
    if isinstance(tree, Tensor):
        return tree[source] if tree.ndim >= 1 and tree.shape[0] == c else tree
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_take_rows(t, source, c) for t in tree))
    return tree


def _warn_outliers(found: list[Outlier], action: str) -> None:
    if not found:
        return
    done = {"reinit": "re-initialised from a typical chain", "exclude": "left out",
            "keep": "kept"}[action]
    lines = [f"chain {o.chain} at step {o.step} ({o.reason}: acceptance {o.acceptance:.2f}, "
             f"energy {o.energy:.3g})" for o in found[:8]]
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    warnings.warn(f"warm-up found outlier chains, {done}: {'; '.join(lines)}{more}; see "
                  f"Adapted.outliers", OutlierChainWarning, stacklevel=3)


class _WindowSums:
    """Sums of ``x`` and ``x^2`` (float64) per chain over a mass window's ``n`` draws (and of
    ``x x^T`` over chains, for a dense or low-rank mass), and the regularised estimates they
    give: ``n/(n+5) var + 1e-3 5/(n+5)``, the same shrinkage towards ``1e-3 I`` for a
    covariance (Stan). Pooled over chains, the variance is each kept chain's own about its
    own mean, averaged; the covariance is the within-chain correlation pooled over the kept
    chains (a far-away outlier's huge draws would overflow it) scaled by those variances."""

    def __init__(self, x: Tensor, per_chain: bool, kind: str | None = "diag") -> None:
        self.per_chain = per_chain
        self.total = x.new_zeros(x.shape, dtype=torch.float64)
        self.sq = x.new_zeros(x.shape, dtype=torch.float64)
        self.kind = kind
        d = x[0].numel()
        self.cross = (x.new_zeros((x.shape[0], d, d), dtype=torch.float64)
                      if kind != "diag" else None)  # per chain, (C, d, d)
        self.n = 0  # draws per chain

    def add(self, xs: Tensor) -> None:
        """Add a stack of draws ``(steps, C, *event)``."""
        xs = xs.double()
        self.total += xs.sum(0)
        self.sq += (xs * xs).sum(0)
        if self.cross is not None:
            rows = xs.reshape(*xs.shape[:2], self.cross.shape[-1])
            self.cross += torch.einsum("sci,scj->cij", rows, rows)
        self.n += xs.shape[0]

    def _within(self) -> Tensor:
        """Each chain's variance about its own mean, ``(C, *event)`` (a chain that has not
        moved gives rounding around 0: clamped at 0)."""
        return ((self.sq - self.total * self.total / self.n) / (self.n - 1)).clamp(min=0.0)

    def variance(self, keep: Tensor) -> Tensor:
        var = self._within()
        n = self.n
        if not self.per_chain:
            var, n = var[keep].mean(0), n * int(keep.sum())
        return n / (n + 5.0) * var + 1e-3 * 5.0 / (n + 5.0)

    def covariance(self, keep: Tensor) -> Tensor:
        means = self.total.reshape(self.total.shape[0], -1)[keep] / self.n
        within = ((self.cross[keep].sum(0) - self.n * means.mT @ means)
                  / (means.shape[0] * (self.n - 1)))
        sd = within.diagonal().clamp(min=0.0).sqrt()
        # the correlation; where a coordinate did not move in any kept chain (rounding
        # only), none: stuck chains must give the regularised identity, not 0 / 0
        sds = torch.outer(sd, sd)
        corr = torch.where(sds > 0, within / sds, 0.0).clamp(-1.0, 1.0)
        corr.diagonal().fill_(1.0)
        var = self._within().reshape(self.total.shape[0], -1)[keep].mean(0)
        cov = corr * torch.outer(var.sqrt(), var.sqrt())
        cov = (cov + cov.mT) / 2  # symmetric to rounding, as DenseMass checks
        n = self.n * int(keep.sum())
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return n / (n + 5.0) * cov + 1e-3 * 5.0 / (n + 5.0) * eye

    def estimate(self, rank: int, dtype: torch.dtype, keep: Tensor
                 ) -> Tensor | DenseMass | LowRankMass:
        """The window's inverse mass of this kind, in ``dtype``, from the chains ``keep``
        (``(C,)`` bool)."""
        if self.kind == "diag":
            return self.variance(keep).to(dtype)
        cov = self.covariance(keep)
        if self.kind == "dense":
            return DenseMass.of(cov.to(dtype))
        sigma = cov.diagonal().sqrt()
        values, vectors = torch.linalg.eigh(cov / torch.outer(sigma, sigma))
        keep_vectors = values.clamp(min=1e-10).log().abs().argsort(descending=True)[:rank]
        return LowRankMass(sigma.to(dtype), vectors[:, keep_vectors].to(dtype),
                           values[keep_vectors].clamp(min=1e-10).to(dtype))
