"""The No-U-Turn Sampler: multinomial, iterative tree building, every chain in lockstep.

Each step draws ``p ~ N(0, M)`` and doubles a leapfrog trajectory on
``H(x, p) = E(x)/T + p^T M^{-1} p / 2``, in a random direction each time, until it makes
a U-turn (the generalised criterion, Betancourt 2017)

    v_-^T rho <= 0  or  v_+^T rho <= 0,   v = M^{-1} p,  rho = sum of p over the tree
                                                          minus the ends' half weights,

diverges (``H - H_0 > max_energy_error``) or reaches ``max_tree_depth`` doublings. The
next state is drawn from the trajectory's points with weights ``exp(H_0 - H)``: uniformly
(progressively) inside each new subtree, and the subtree against the old trajectory by
the biased transition ``min(1, W_new / W_old)`` (Hoffman & Gelman 2014; Betancourt 2017).
A subtree is built leaf by leaf and checked for U-turns on the fly from checkpoints of
its momenta (NumPyro's iterative scheme, Phan et al. 2019), so memory is
``O(max_tree_depth)`` per chain.

All chains move together: eagerly, at each depth every chain that is still building takes
the same number of leapfrog steps, a chain that has stopped is masked (its results
discarded, its gradients not counted); compiled (:func:`walk`), each chain runs its own
tree one leaf an iteration of one loop. ``Info.n_grads`` and ``Info.tree_depth`` report
each chain's own work; ``acceptance_prob`` is the mean of ``min(1, exp(H_0 - H))`` over
the trajectory's points, what dual averaging tunes towards 0.8.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..energy import energy_and_grad
from ..integrators import event_sum, per_chain
from ..mass import Mass, kinetic, momentum, velocity
from ..trees import group, ungroup
from ..util import boolean, integer
from .base import (
    Info,
    Kernel,
    Parameter,
    State,
    compile_per_call,
    event_noise,
    on_device,
    traceable,
    uniforms,
    value_at,
)


class CompileWarning(UserWarning):
    """``NUTS(compile=True)`` compiles each leaf instead of the whole step."""


class NUTSParams(NamedTuple):
    """NUTS's parameters: the step size, ``sqrt(T)``, the inverse mass (any of
    :mod:`torchlangevin.mass`), the most doublings and the divergence threshold."""

    step_size: Parameter
    noise_scale: Parameter = 1.0
    inv_mass: Mass = 1.0
    max_tree_depth: int = 10
    max_energy_error: float = 1000.0


class NUTSInfo(NamedTuple):
    """Per chain: ``log`` of the trajectory's mean acceptance, whether the state moved,
    whether the trajectory diverged, the gradients it took and its depth (doublings)."""

    log_accept_ratio: Tensor
    accepted: Tensor
    divergent: Tensor
    n_grads: Tensor
    tree_depth: Tensor

    #: the mean of ``min(1, exp(H_0 - H))`` over the trajectory's points
    acceptance_prob = Info.acceptance_prob


class _Point(NamedTuple):
    """A point of the trajectory: position, momentum, energy and gradient."""

    x: Tensor
    p: Tensor
    energy: Tensor
    grad: Tensor


class _Sums(NamedTuple):
    """What a subtree accumulates over its leaves: its proposal, ``log`` of its weight, its
    momentum sum, and per chain the acceptance sum and the leaves counted."""

    proposal: _Point
    log_w: Tensor
    rho: Tensor
    accept_sum: Tensor
    count: Tensor


def leapfrog_leaf(energy: Any, point: _Point, signed_eps: Tensor, half: Tensor,
                  inv_mass: Mass) -> _Point:
    """One leapfrog step from ``point``: ``signed_eps`` is the per-chain step with its
    direction, ``half = signed_eps / (2 T)``."""
    p = torch.addcmul(point.p, half, point.grad, value=-1.0)
    x = torch.addcmul(point.x, signed_eps, velocity(p, inv_mass))
    e, g = energy_and_grad(energy, x)
    return _Point(x, torch.addcmul(p, half, g, value=-1.0), e, g)


def absorb(sums: _Sums, leaf: _Point, active: Tensor, first: Tensor, u: Tensor,
           h0: Tensor, inv_t: float | Tensor, inv_mass: Mass, max_energy_error: float,
           support: Any) -> tuple[_Sums, Tensor, Tensor, Tensor]:
    """Add a leaf to a subtree's sums; returns the sums, whether the leaf stops the chain
    (divergence ``H - H_0 > max_energy_error``, or outside the support), whether it
    diverged, and the uniform for the next leaf. Results only matter for chains still
    ``active``: the others' are discarded by the merge, so most updates need no mask.

    The proposal moves to the leaf with probability ``q = w_leaf / W`` (progressive
    sampling inside the subtree; always at the ``first`` leaf), where ``u < q``; then
    ``u / q`` (taken) or ``(u - q) / (1 - q)`` (not) is again uniform and independent of
    the decision, so one uniform serves a whole subtree: it loses about ``log2(2^d)``
    bits of its precision over the subtree's choice (kept in float64)."""
    delta = torch.nan_to_num(leaf.energy * inv_t + kinetic(leaf.p, inv_mass) - h0,
                             nan=math.inf)
    stop = delta > max_energy_error
    if support is not None:  # weight 0 and the end of the tree, but no divergence
        outside = ~support.contains(leaf.x)
        delta = delta.masked_fill(outside, math.inf)
        stop = stop & ~outside
        diverged, stop = active & stop, stop | outside
    else:
        diverged = active & stop
    on = active.to(delta.dtype)
    accept_sum = torch.addcmul(sums.accept_sum, torch.exp(torch.clamp(-delta, max=0.0)), on)
    log_w = torch.logaddexp(sums.log_w, -delta)
    q = torch.where(first, 1.0, torch.nan_to_num(torch.exp(-delta - log_w), nan=0.0)
                    .clamp(max=1.0).to(u.dtype))
    take = u < q
    u = torch.where(take, u / q, (u - q) / (1.0 - q)).clamp(0.0, _BELOW_ONE)
    return (_Sums(_where(take | first, leaf, sums.proposal), log_w, sums.rho + leaf.p,
                  accept_sum, sums.count + on), stop, diverged, u)


def extend(energy: Any, support: Any, sums: _Sums, edge: _Point, idx: Tensor | None,
           signed_eps: Tensor, half: Tensor, inv_mass: Mass, active: Tensor, first: Tensor,
           u: Tensor, h0: Tensor, inv_t: float | Tensor, max_energy_error: float
           ) -> tuple[_Point, _Sums, Tensor, Tensor, Tensor]:
    """A subtree's next leaf from its far end ``edge`` (:func:`leapfrog_leaf`) and its
    sums with it (:func:`absorb`). With ``idx``, only those chains' leaves are computed
    (the energy sees a smaller batch) and the others keep ``edge``: what a chain that has
    stopped computes is discarded, so this saves the lockstep's wasted gradients without
    changing any result."""
    if idx is None:
        leaf = leapfrog_leaf(energy, edge, signed_eps, half, inv_mass)
    else:
        rows = inv_mass
        if isinstance(inv_mass, Tensor) and inv_mass.ndim == edge.x.ndim:  # per chain
            rows = inv_mass[idx]
        new = leapfrog_leaf(energy, _Point(*(v[idx] for v in edge)), signed_eps[idx],
                            half[idx], rows)
        leaf = _Point(*(v.index_copy(0, idx, u) for v, u in zip(edge, new, strict=True)))
    return (leaf, *absorb(sums, leaf, active, first, u, h0, inv_t, inv_mass,
                          max_energy_error, support))


#: the largest float64 below 1
_BELOW_ONE = math.nextafter(1.0, 0.0)


def subtree_uniform(z1: Tensor, z2: Tensor) -> Tensor:
    """A subtree's uniform for its progressive sampling (:func:`absorb`), per chain, from
    two standard normals: ``u = frac(Phi(z1) + 2^-24 Phi(z2))``, exactly uniform, in float64
    (on MPS, which has none, float32) with >= 48 random bits even from float32 noise."""
    dtype = torch.float32 if z1.device.type == "mps" else torch.float64
    u = uniforms(z1).to(dtype) + uniforms(z2).to(dtype) * 2.0**-24
    return u - torch.floor(u)


def _where(mask: Tensor, a: NamedTuple, b: NamedTuple) -> Any:
    """Per chain, ``a``'s fields where ``mask`` else ``b``'s."""
    return type(a)(*(torch.where(mask.view(-1, *([1] * (u.ndim - 1))), u, v)
                     for u, v in zip(a, b, strict=True)))


def _turning(v_left: Tensor, v_right: Tensor, p_left: Tensor, p_right: Tensor,
             rho: Tensor) -> Tensor:
    """The generalised U-turn criterion of a (sub)tree with end momenta ``p`` (velocities
    ``v = M^{-1} p``) and momentum sum ``rho``."""
    rho = rho - 0.5 * (p_left + p_right)
    return (event_sum(v_left * rho) <= 0) | (event_sum(v_right * rho) <= 0)


def _stacked_velocity(p: Tensor, inv_mass: Mass) -> Tensor:
    """``M^{-1} p`` for a stack ``(k, C, *event)`` of momenta: a matrix mass acts on rows,
    a scalar or (per-chain) diagonal one broadcasts."""
    if isinstance(inv_mass, tuple):  # DenseMass, LowRankMass
        return velocity(p.reshape(-1, *p.shape[2:]), inv_mass).view(p.shape)
    return velocity(p, inv_mass)


def checkpoints(leaf: int) -> tuple[int, int]:
    """The checkpoints ``[lo, hi]`` leaf ``leaf`` of a subtree is checked against: ``hi`` is
    the number of set bits of ``leaf >> 1``, ``hi - lo + 1`` the trailing ones of ``leaf``
    (the subtrees that leaf completes). Even leaves check none (``lo = hi + 1``) and store
    their momentum at ``hi``."""
    hi = bin(leaf >> 1).count("1")
    trailing = (leaf ^ (leaf + 1)).bit_length() - 1
    return hi - trailing + 1, hi


def _compiled_cache(energy: Any, support: Any) -> dict[str, Any]:
    """The compiled functions of NUTS kernels on ``energy`` and ``support``: the steps per
    (depth, threshold, scalar mass, state shape), those that have run, the leaf, and
    whether the step compiles. Kept on the
    energy where it takes attributes (a function, a ``Model``'s energy), so a new kernel
    on it (each ``sample_posterior`` call makes one) does not compile again, and freed
    with it; otherwise on the kernel (shared by the copies ``replace`` makes). Only plain
    functions and energies that say so (``shares_compiled = True``) take it: a module
    would carry compiled code into its copies."""
    cache = {"walks": {}, "proven": set(), "leaf": None, "whole": True, "support": support}
    if not (inspect.isfunction(energy) or getattr(energy, "shares_compiled", False)):
        return cache
    store = energy.__dict__
    caches = store.setdefault("_torchlangevin_nuts_compiled", [])
    for known in caches:
        if known["support"] is support:
            return known
    caches.append(cache)
    return cache


def _depth(name: str, value: Any) -> int:
    depth = integer(name, value, 1)
    if depth > 16:  # 65,535 leapfrog steps a step, and as many noise columns
        raise ValueError(f"{name} must be at most 16; got {value!r}")
    return depth


class NUTS(Kernel):
    """The No-U-Turn Sampler (multinomial, generalised U-turn, iterative subtrees).

    Args:
        energy: callable ``(C, *event) -> (C,)``, optionally with ``grad``.
        step_size: leapfrog ``eps > 0``: float or ``(C,)`` tensor (``adapt`` tunes it).
        inv_mass: ``M^{-1}``: float, diagonal tensor, ``DenseMass`` or ``LowRankMass``.
        max_tree_depth: at most ``2^max_tree_depth - 1`` leapfrog steps per step.
        noise_scale: ``sqrt(T)`` > 0.
        support: a ``Box``; a trajectory stops where it leaves the support (its points
            outside get weight 0).
        max_energy_error: ``H - H_0`` above which a trajectory is divergent.
        compile: run each step as one ``torch.compile``d graph (:func:`walk`: a
            ``torch.while_loop`` over leaves, every chain at its own depth and leaf, no
            host sync inside). The first step compiles (20-60 s; again when the mass
            changes type or the number of chains changes); afterwards a leaf costs one
            fused kernel instead of dozens of small ops, 4-5x faster on small models. A
            chain whose tree has ended computes (and discards) leaves until the last
            chain's ends, where the eager step computes only the chains still building:
            on a model whose gradient is most of the time, eager can be faster. An
            energy without ``grad`` is differentiated by ``torch.func.grad_and_value``;
            the energy must compile without graph breaks. Same draws as eager up to
            rounding.
    """

    name = "nuts"
    target_accept = 0.8
    positive_params = ("step_size", "noise_scale")
    Params = NUTSParams
    param_rules = {"max_tree_depth": lambda name, v: _depth(name, v)}
    #: the tree's doublings and leaves stop where the chains do: Python control flow
    compilable = False
    compile_advice = "run it eagerly, as NUTS(..., compile=True) (each step compiled)"

    def __init__(self, energy, step_size: Parameter, inv_mass: Mass = 1.0,
                 max_tree_depth: int = 10, noise_scale: Parameter = 1.0, support=None,
                 max_energy_error: float = 1000.0, compile: bool = False) -> None:  # noqa: A002
        super().__init__(energy, step_size, noise_scale, support, inv_mass,
                         max_tree_depth=max_tree_depth, max_energy_error=max_energy_error)
        self.compile = boolean("compile", compile)
        self._compiled = _compiled_cache(self.energy, self.support)

    def walk_fn(self, max_tree_depth: int, max_energy_error: float, inv_mass: Mass,
                x: Tensor) -> Callable[..., tuple[_Point, NUTSInfo]]:
        """:func:`walk` on this kernel's energy and support, compiled once per tree depth,
        mass type and state shape, dtype and device (each its own code object: dynamo's
        recompile limit would otherwise be reached by a model sampled at many chain
        counts): ``fn(x, e, g, noise, eps, inv_t, inv_mass)``, a float ``inv_mass`` a
        constant of the graph."""
        scalar = None if isinstance(inv_mass, (Tensor, tuple)) else float(inv_mass)
        key = (max_tree_depth, max_energy_error, scalar, tuple(x.shape), x.dtype, x.device)
        walks = self._compiled["walks"]
        if key not in walks:
            energy, support = traceable(self.energy), self.support

            def fn(x: Tensor, e: Tensor, g: Tensor, noise: Tensor, eps: Tensor,
                   inv_t: Tensor, inv_mass: Mass) -> tuple[_Point, NUTSInfo]:
                return walk(energy, support, x, e, g, noise, eps, inv_t,
                            inv_mass if scalar is None else scalar, max_tree_depth,
                            max_energy_error)

            # one graph per chain count; C++ glue: the loop's Python glue cost more than
            # the leaf's arithmetic on small models
            walks[key] = compile_per_call(fn, "nuts_step", dynamic=False,
                                          options={"cpp_wrapper": True})
        return walks[key]

    def leaf_fn(self) -> Callable[..., tuple[_Point, _Sums, Tensor, Tensor, Tensor]]:
        """:func:`extend` on this kernel's energy and support, compiled where the whole
        step does not compile."""
        if not self.compile:
            return functools.partial(extend, self.energy, self.support)
        if self._compiled["leaf"] is None:
            energy, support = traceable(self.energy), self.support

            def fn(*args: Any) -> tuple[_Point, _Sums, Tensor, Tensor, Tensor]:
                return extend(energy, support, *args)

            self._compiled["leaf"] = compile_per_call(fn, "nuts_leaf")
        return self._compiled["leaf"]

    def _compiled_step(self, state: State, noise: Tensor, params: NUTSParams,
                       scale: float | Tensor) -> tuple[State, NUTSInfo] | None:
        """The step as one compiled graph (:func:`walk`), or ``None`` (and a warning, once
        per energy) where the energy does not compile inside the loop: then each leaf is
        compiled instead. Only a graph's first call (its compiling) may fall back: an error
        in a graph that has run is raised as it is."""
        x = state.x
        rows = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        eps = rows * value_at(params.step_size, state.step, x)
        inv_mass = on_device(params.inv_mass, x)
        fn = self.walk_fn(params.max_tree_depth, params.max_energy_error, inv_mass, x)
        proven = self._compiled["proven"]
        try:
            prop, info = fn(x, state.energy, state.grad, noise, eps, rows / (scale * scale),
                            inv_mass if isinstance(inv_mass, (Tensor, tuple)) else None)
        except Exception as err:  # torch's tracer: a graph break, an unsupported op
            if fn in proven:
                raise
            self._compiled["whole"] = False
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            warnings.warn(f"NUTS(compile=True): the energy does not compile inside the "
                          f"step's loop ({type(err).__name__}: {reason[:200]}); compiling "
                          f"each leaf instead, with the tree in Python (slower a leaf on "
                          f"small models)", CompileWarning, stacklevel=4)
            return None
        proven.add(fn)
        return State(prop.x, prop.energy, prop.grad, state.step + 1), info

    def noise_size(self, state: State) -> int:
        # the momentum; per depth a direction, a uniform for the merge and two for the
        # progressive sampling inside its subtree (see absorb)
        return super().noise_size(state) + 4 * self.params.max_tree_depth

    def step(self, state: State, noise: Tensor, params: NUTSParams, batch: Any = None
             ) -> tuple[State, NUTSInfo]:
        x = state.x
        n, depth_max = x[0].numel(), params.max_tree_depth
        if noise.shape[1] < n + 4 * depth_max:
            raise ValueError(f"noise has {noise.shape[1]} columns; NUTS with max_tree_depth="
                             f"{depth_max} needs {n + 4 * depth_max}")
        scale = value_at(params.noise_scale, state.step, x)
        if self.compile and self._compiled["whole"]:
            done = self._compiled_step(state, noise, params, scale)
            if done is not None:
                return done
        run = _Trajectory(self, state, noise, params, value_at(params.step_size, state.step, x),
                          1.0 / (scale * scale))
        for d in range(depth_max):
            if not bool(run.building.any()):  # one host sync per doubling, none per leaf
                break
            run.double(d)
        return run.result(state)


class _Trajectory:
    """One NUTS trajectory for every chain: the ends, the proposal, the weights, the
    momentum sum, and which chains are still building."""

    def __init__(self, kernel: NUTS, state: State, noise: Tensor, params: NUTSParams,
                 eps: float | Tensor, inv_t: float | Tensor) -> None:
        x = state.x
        self.kernel, self.noise, self.params = kernel, noise, params
        self.extend = kernel.leaf_fn()
        self.n = x[0].numel()
        self.inv_mass = on_device(params.inv_mass, x)
        self.eps, self.inv_t = per_chain(eps, x), per_chain(inv_t, x)
        self.inv_t_c = inv_t  # per chain as (C,) or a float, for the energies
        p = momentum(event_noise(noise, x), self.inv_mass)
        self.h0 = state.energy * inv_t + kinetic(p, self.inv_mass)
        start = _Point(x, p, state.energy, state.grad)
        self.left = self.right = start
        self.proposal = _Point(*(v.clone() for v in start))  # not the edges' tensors
        self.first = torch.ones(1, dtype=torch.bool, device=x.device)
        self.later = ~self.first
        self.log_w = torch.zeros_like(self.h0)
        self.rho = p.clone()
        c = x.shape[0]
        self.building = torch.ones(c, dtype=torch.bool, device=x.device)
        self.divergent = torch.zeros_like(self.building)
        self.depth = torch.zeros(c, dtype=torch.long, device=x.device)
        self.n_grads = torch.zeros_like(self.depth)
        self.accept_sum = torch.zeros_like(self.h0)
        # written before they are read (at a subtree's even leaves): no need to zero them
        self.p_ckpt = x.new_empty((params.max_tree_depth, *x.shape))
        self.rho_ckpt = torch.empty_like(self.p_ckpt)

    def double(self, d: int) -> None:
        """Build a subtree of ``2^d`` leaves from one end, in a random direction per chain,
        and merge it into the trajectory."""
        n, depth_max, noise = self.n, self.params.max_tree_depth, self.noise
        forward = noise[:, n + d] > 0
        sign = per_chain(torch.where(forward, 1.0, -1.0).to(self.h0.dtype), self.left.x)
        signed_eps = sign * self.eps
        half = 0.5 * signed_eps * self.inv_t
        sub = _Subtree(self, _where(forward, self.right, self.left), self.building,
                       subtree_uniform(noise[:, n + 2 * depth_max + d],
                                       noise[:, n + 3 * depth_max + d]))
        c, n_active = self.h0.shape[0], int(self.building.sum())
        least = 2 if self.kernel.compile else 1  # compiled, one chain would be a new graph
        for j in range(2**d):
            # when at most half of the chains are building, only theirs are computed
            idx = sub.active.nonzero().squeeze(1) if least <= n_active <= c // 2 else None
            sub.add(j, idx, signed_eps, half)
            n_active = int(sub.active.sum())  # one host sync a leaf: stop, or compact next
            if not n_active:
                break
        # merge: the subtree's proposal replaces the trajectory's with min(1, W_sub / W);
        # a subtree still active at its end neither turned nor diverged
        valid, sums = sub.active, sub.sums
        u = uniforms(noise[:, n + depth_max + d])
        take = valid & (torch.log(u) < sums.log_w - self.log_w)
        self.proposal = _where(take, sums.proposal, self.proposal)
        self.log_w = torch.where(valid, torch.logaddexp(self.log_w, sums.log_w), self.log_w)
        grown = self.building
        self.right = _where(grown & forward, sub.edge, self.right)
        self.left = _where(grown & ~forward, sub.edge, self.left)
        self.rho = torch.where(per_chain(grown, self.rho), self.rho + sums.rho, self.rho)
        self.depth = self.depth + grown.long()
        self.n_grads = self.n_grads + sums.count.long()
        self.accept_sum = self.accept_sum + sums.accept_sum
        self.divergent = self.divergent | sub.diverged
        turned = _turning(velocity(self.left.p, self.inv_mass),
                          velocity(self.right.p, self.inv_mass),
                          self.left.p, self.right.p, self.rho)
        self.building = valid & ~turned

    def result(self, state: State) -> tuple[State, NUTSInfo]:
        prop = self.proposal
        moved = (prop.x != state.x).flatten(1).any(1)
        mean_accept = self.accept_sum / self.n_grads.clamp(min=1)
        info = NUTSInfo(torch.log(mean_accept), moved, self.divergent, self.n_grads,
                        self.depth)
        return State(prop.x, prop.energy, prop.grad, state.step + 1), info


class _Subtree:
    """A subtree being built leaf by leaf: its far end, its sums, whether it diverged,
    which chains are still building it (not turned, not diverged) and its uniform."""

    def __init__(self, traj: _Trajectory, edge: _Point, active: Tensor, u: Tensor) -> None:
        self.traj, self.edge, self.active, self.u = traj, edge, active, u
        h0 = traj.h0
        self.sums = _Sums(traj.proposal, torch.full_like(h0, -math.inf), torch.zeros_like(edge.p),
                          torch.zeros_like(h0), torch.zeros_like(h0))
        self.diverged = torch.zeros_like(active)

    def add(self, j: int, idx: Tensor | None, signed_eps: Tensor, half: Tensor) -> None:
        """Add leaf ``j`` (computed for the chains ``idx``, or all): its sums
        (:func:`extend`), then the U-turns of the subtrees it completes against the
        checkpointed momenta."""
        traj, active = self.traj, self.active
        leaf, self.sums, stop, diverged, self.u = traj.extend(
            self.sums, self.edge, idx, signed_eps, half, traj.inv_mass, active,
            traj.first if j == 0 else traj.later, self.u, traj.h0, traj.inv_t_c,
            traj.params.max_energy_error)
        self.diverged = self.diverged | diverged
        self.edge = leaf
        lo, hi = checkpoints(j)
        if j % 2 == 0:
            traj.p_ckpt[hi] = leaf.p
            traj.rho_ckpt[hi] = self.sums.rho
        elif hi >= lo:  # the U-turn of every subtree this leaf completes, at once
            k, shape = hi - lo + 1, (-1, *leaf.p.shape[1:])  # checkpoints as extra chains
            p_i = traj.p_ckpt[lo:hi + 1]
            rho = (self.sums.rho - traj.rho_ckpt[lo:hi + 1] + p_i).reshape(shape)
            v_i = _stacked_velocity(p_i, traj.inv_mass).reshape(shape)

            def rows(t: Tensor) -> Tensor:
                return t.expand(k, *t.shape).reshape(shape)

            stop = stop | _turning(v_i, rows(velocity(leaf.p, traj.inv_mass)),
                                   p_i.reshape(shape), rows(leaf.p), rho).view(k, -1).any(0)
        self.active = active & ~stop


# -- the whole trajectory as one loop (compile=True) ------------------------------------------


class _Walk(NamedTuple):
    """Every chain's place in its own trajectory, advanced one leaf an iteration: the
    trajectory (its ends, proposal, weight, momentum sum, counts, whether it still grows),
    the subtree being built (far end, sums, whether it is still active, diverged, its
    direction and the next leaf's index) and the subtree's checkpointed momenta."""

    left: _Point
    right: _Point
    proposal: _Point
    log_w: Tensor
    rho: Tensor
    building: Tensor
    divergent: Tensor
    depth: Tensor
    n_grads: Tensor
    accept_sum: Tensor
    edge: _Point
    sums: _Sums
    active: Tensor
    sub_diverged: Tensor
    forward: Tensor
    leaf: Tensor
    u: Tensor
    p_ckpt: Tensor
    rho_ckpt: Tensor


def _column(noise: Tensor, col: Tensor) -> Tensor:
    """Per chain, its own column ``col`` of the step's ``(C, m)`` noise."""
    return noise.gather(1, col.unsqueeze(1)).squeeze(1)


def walk(energy: Any, support: Any, x: Tensor, energy0: Tensor, grad0: Tensor, noise: Tensor,
         eps: Tensor, inv_t: float | Tensor, inv_mass: Mass, max_tree_depth: int,
         max_energy_error: float) -> tuple[_Point, NUTSInfo]:
    """A NUTS step for every chain as one ``torch.while_loop`` over leaves, each chain at
    its own depth and leaf: the trees :class:`_Trajectory` builds doubling by doubling
    (the same noise, the same draws), without a host sync per leaf, so that compiled the
    whole step is one graph. A chain whose tree has ended waits (masked) until the last
    one's has; ``eps`` is ``(C,)``."""
    depth_max, dev = max_tree_depth, x.device
    c, n = x.shape[0], x[0].numel()
    bcast = (-1, *([1] * (x.ndim - 1)))
    p = momentum(event_noise(noise, x), inv_mass)
    h0 = energy0 * inv_t + kinetic(p, inv_mass)
    # per leaf index: its checkpoint range; per depth: its last leaf
    lo, hi = (torch.tensor(v, device=dev) for v in
              zip(*(checkpoints(j) for j in range(2 ** (depth_max - 1))), strict=True))
    last = torch.tensor([2**d - 1 for d in range(depth_max)], device=dev)
    slots = torch.arange(depth_max, device=dev).view(-1, 1)
    rows = (-1, *x.shape[1:])

    def fresh(proposal: _Point) -> _Sums:
        return _Sums(proposal, torch.full_like(h0, -math.inf), torch.zeros_like(x),
                     torch.zeros_like(h0), torch.zeros_like(h0))

    def body(w: _Walk) -> tuple[_Walk]:
        d = w.depth.clamp(max=depth_max - 1)
        start = w.leaf == 0
        forward = torch.where(start, _column(noise, n + d) > 0, w.forward)
        edge = _where(start, _where(forward, w.right, w.left), w.edge)
        new = fresh(w.proposal)
        sums = _Sums(_where(start, new.proposal, w.sums.proposal),
                     *(torch.where(start.view(bcast) if u.ndim > 1 else start, u, v)
                       for u, v in zip(new[1:], w.sums[1:], strict=True)))
        active = torch.where(start, w.building, w.active)
        signed_eps = torch.where(forward, eps, -eps).view(bcast)
        u = torch.where(start, subtree_uniform(_column(noise, n + 2 * depth_max + d),
                                               _column(noise, n + 3 * depth_max + d)), w.u)
        leaf, sums, stop, diverged, u = extend(
            energy, support, sums, edge, None, signed_eps,
            0.5 * signed_eps * per_chain(inv_t, x), inv_mass, active, start, u, h0, inv_t,
            max_energy_error)
        # even leaves store their momentum at slot hi; odd ones check the slots lo..hi
        j_lo, j_hi, odd = lo[w.leaf], hi[w.leaf], (w.leaf % 2) == 1
        store = ((slots == j_hi) & ~odd).view(depth_max, *bcast)
        p_ckpt = torch.where(store, leaf.p, w.p_ckpt)
        rho_ckpt = torch.where(store, sums.rho, w.rho_ckpt)
        check = (slots >= j_lo) & (slots <= j_hi) & odd

        def expand(t: Tensor) -> Tensor:
            return t.expand(depth_max, *t.shape).reshape(rows)

        turns = _turning(_stacked_velocity(p_ckpt, inv_mass).reshape(rows),
                         expand(velocity(leaf.p, inv_mass)), p_ckpt.reshape(rows),
                         expand(leaf.p), (sums.rho - rho_ckpt + p_ckpt).reshape(rows))
        active = active & ~(stop | (turns.view(depth_max, c) & check).any(0))
        # a subtree that ends (all its leaves, or stopped) merges into its trajectory
        end = w.building & (~active | (w.leaf == last[d]))
        valid = end & active
        u_merge = uniforms(_column(noise, n + depth_max + d))
        take = valid & (torch.log(u_merge) < sums.log_w - w.log_w)
        right = _where(end & forward, leaf, w.right)
        left = _where(end & ~forward, leaf, w.left)
        rho = torch.where(end.view(bcast), w.rho + sums.rho, w.rho)
        depth = w.depth + end.long()
        turned = _turning(velocity(left.p, inv_mass), velocity(right.p, inv_mass), left.p,
                          right.p, rho)
        return (_Walk(
            left, right, _where(take, sums.proposal, w.proposal),
            torch.where(valid, torch.logaddexp(w.log_w, sums.log_w), w.log_w), rho,
            torch.where(end, valid & ~turned & (depth < depth_max), w.building),
            w.divergent | (end & (w.sub_diverged & ~start | diverged)), depth,
            w.n_grads + torch.where(end, sums.count.long(), 0),
            w.accept_sum + torch.where(end, sums.accept_sum, 0.0), leaf, sums, active,
            (w.sub_diverged & ~start) | diverged, forward,
            torch.where(end | ~w.building, 0, w.leaf + 1), u, p_ckpt, rho_ckpt),)

    def point() -> _Point:
        return _Point(x.clone(), p.clone(), energy0.clone(), grad0.clone())

    false = torch.zeros(c, dtype=torch.bool, device=dev)
    zeros = torch.zeros(c, dtype=torch.long, device=dev)
    ckpt = x.new_zeros((depth_max, *x.shape))
    w0 = _Walk(point(), point(), point(), torch.zeros_like(h0), p.clone(), ~false, false.clone(),
               zeros, zeros.clone(), torch.zeros_like(h0), point(), fresh(point()),
               false.clone(), false.clone(), false.clone(), zeros.clone(),
               subtree_uniform(noise[:, 0], noise[:, 0]), ckpt, ckpt.clone())
    groups, layout = group(w0)

    def grouped_body(*groups: Tensor) -> tuple[Tensor, ...]:
        return group(body(ungroup(groups, layout))[0])[0]

    groups = torch.while_loop(lambda *g: ungroup(g, layout).building.any(), grouped_body,
                              groups)
    w = ungroup(groups, layout)
    prop = w.proposal
    moved = (prop.x != x).flatten(1).any(1)
    mean_accept = w.accept_sum / w.n_grads.clamp(min=1)
    return prop, NUTSInfo(torch.log(mean_accept), moved, w.divergent, w.n_grads, w.depth)
