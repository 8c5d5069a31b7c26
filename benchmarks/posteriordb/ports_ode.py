"""posteriordb's ODE posteriors: Lotka-Volterra on the Hudson's Bay lynx-hare counts and a
one-compartment pharmacokinetic model (first-order absorption, Michaelis-Menten
elimination), solved by a fixed-grid classical Runge-Kutta (RK4) batched over chains,
differentiated by forward sensitivities.

Why fixed-grid RK4 and not Stan's adaptive RK45 / BDF: a fixed grid makes the discrete
solution a smooth function of the parameters (an adaptive solver's step choices make it,
and so the energy, piecewise, which NUTS's energy conservation feels), costs the same for
every chain (one batched step for all), and needs no new dependency. Its global error is
``O(h^4)``; the grids are chosen so that the log density's error at Stan's reference
draws, against the same solver on a grid 8 times finer, is below
:data:`MAX_LOG_DENSITY_ERROR` (``tests/test_posteriordb_ports.py`` checks it): a log
density perturbed by at most ``eps`` moves any posterior mean by at most about ``eps``
posterior sds (importance weights within ``exp(+-eps)``), a tenth of the 4-standard-error
bar's 0.1 sd at ESS 1,600.

Why forward sensitivities in NumPy and not autograd through the steps: the solution
``y(t)`` and ``S = dy/d(params, y0)`` are stepped together (``dS/dt = J_y S + J_p``, RK4
on the augmented system, which is exactly the derivative of the RK4 map); each step is a
few dozen array operations on ``(chains, D, P + D)`` arrays, where recording and replaying
an autograd graph of 80-200 steps cost 30-100x more per gradient on one thread. The
backward pass is then one contraction, ``dE/dq = sum_t (dE/dy_t) S_t``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Cauchy, LogNormal, constraints

from benchmarks.posteriordb.common import normal, t64
from torchlangevin.model import Model, Param

__all__ = ["time_grid", "rk4_solve", "lotka_volterra", "one_comp_mm_elim_abs",
           "MAX_LOG_DENSITY_ERROR", "LV_STEP", "PK_STEP", "PORTS"]

#: the largest |log density error| the ODE ports' grids allow at the reference draws
MAX_LOG_DENSITY_ERROR = 0.01

#: ``rhs(t, y, p) -> (f, J_y, J_p)``: ``dy/dt`` ``(C, D)`` and its Jacobians in ``y``
#: ``(C, D, D)`` and in the parameters ``(C, D, P)``, for ``y (C, D)``, ``p (C, P)``
System = Callable[[float, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def time_grid(t0: float, times: Sequence[float], max_step: float,
              power: float = 1.0) -> tuple[list[float], list[int]]:
    """A grid from ``t0`` through the increasing ``times`` and the grid indices of
    ``times``. Between consecutive times, equal steps of at most ``max_step`` in
    ``tau = (t - t0)^(1/power)``: ``power = 1`` is uniform in ``t``; ``power = 2`` grades
    the steps from ``O(max_step^2)`` at ``t0`` (where a solution starting at rest changes
    fastest) to ``O(max_step sqrt(t - t0))``."""
    if not max_step > 0 or not power >= 1:
        raise ValueError(f"max_step must be > 0 and power >= 1; got {max_step!r}, {power!r}")
    grid, save, tau = [float(t0)], [], 0.0
    for t in times:
        if not t > grid[-1]:
            raise ValueError(f"times must increase after t0={t0}; got {list(times)!r}")
        tau_next = (float(t) - t0) ** (1.0 / power)
        n = math.ceil((tau_next - tau) / max_step - 1e-9)
        grid += [t0 + (tau + (tau_next - tau) * (i + 1) / n) ** power for i in range(n)]
        grid[-1] = float(t)
        save.append(len(grid) - 1)
        tau = tau_next
    return grid, save


def _derivatives(rhs: System, t: float, y: np.ndarray, s: np.ndarray,
                 p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, jy, jp = rhs(t, y, p)
    ds = jy @ s
    ds[..., :p.shape[-1]] += jp
    return f, ds


def _rk4_numpy(rhs: System, y0: np.ndarray, p: np.ndarray, grid: Sequence[float],
               save: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """RK4 on ``(y, S)``, ``S = dy/d(p, y0)`` starting at ``[0, I]``; the solution
    ``(C, len(save), D)`` and sensitivities ``(C, len(save), D, P + D)`` at ``save``."""
    c, d = y0.shape
    y = y0.copy()
    s = np.concatenate([np.zeros((c, d, p.shape[-1])), np.broadcast_to(np.eye(d), (c, d, d))],
                       -1)
    ys, ss, keep = [], [], set(save)
    for i in range(1, len(grid)):
        t, h = grid[i - 1], grid[i] - grid[i - 1]
        f1, g1 = _derivatives(rhs, t, y, s, p)
        f2, g2 = _derivatives(rhs, t + h / 2, y + (h / 2) * f1, s + (h / 2) * g1, p)
        f3, g3 = _derivatives(rhs, t + h / 2, y + (h / 2) * f2, s + (h / 2) * g2, p)
        f4, g4 = _derivatives(rhs, t + h, y + h * f3, s + h * g3, p)
        y = y + (h / 6) * (f1 + 2 * (f2 + f3) + f4)
        s = s + (h / 6) * (g1 + 2 * (g2 + g3) + g4)
        if i in keep:
            ys.append(y)
            ss.append(s)
    return np.stack(ys, 1), np.stack(ss, 1)


class _RK4(torch.autograd.Function):
    """``y(t_save)`` of ``dy/dt = f(t, y, p)``, ``y(t0) = y0``; backward by the stored
    forward sensitivities."""

    @staticmethod
    def forward(ctx, y0: Tensor, p: Tensor, rhs: System, grid: Sequence[float],
                save: Sequence[int]) -> Tensor:
        with np.errstate(all="ignore"):  # a far-out trajectory overflows: a divergence
            ys, ss = _rk4_numpy(rhs, y0.detach().cpu().double().numpy(),
                                p.detach().cpu().double().numpy(), grid, save)
        ctx.n_params = p.shape[-1]
        ctx.save_for_backward(torch.from_numpy(ss).to(p))
        return torch.from_numpy(ys).to(p)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (sens,) = ctx.saved_tensors
        g = torch.einsum("cnd,cndq->cq", grad, sens)
        return g[:, ctx.n_params:], g[:, :ctx.n_params], None, None, None


def rk4_solve(rhs: System, y0: Tensor, p: Tensor, grid: Sequence[float],
              save: Sequence[int]) -> Tensor:
    """The classical RK4 solution of ``dy/dt = f(t, y, p)``, ``y(grid[0]) = y0``
    ``(C, D)``, parameters ``p`` ``(C, P)``, on ``grid``, at the grid indices ``save``:
    ``(C, len(save), D)``, differentiable in ``y0`` and ``p``. Per step ``h``:

        k1 = f(t, y), k2 = f(t + h/2, y + h/2 k1), k3 = f(t + h/2, y + h/2 k2),
        k4 = f(t + h, y + h k3), y <- y + h/6 (k1 + 2 k2 + 2 k3 + k4).
    """
    if y0.ndim != 2 or p.ndim != 2 or y0.shape[0] != p.shape[0]:
        raise ValueError(f"y0 must be (C, D) and p (C, P); got {tuple(y0.shape)}, "
                         f"{tuple(p.shape)}")
    return _RK4.apply(y0, p, rhs, grid, save)


def _lv_rhs(t: float, z: np.ndarray, p: np.ndarray):
    """Lotka-Volterra ``f = ((alpha - beta v) u, (-gamma + delta u) v)`` and Jacobians
    (written into preallocated arrays: ``np.stack`` costs more than the arithmetic)."""
    u, v = z[:, 0], z[:, 1]
    alpha, beta, gamma, delta = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    jy = np.empty((len(z), 2, 2))
    jy[:, 0, 0] = alpha - beta * v
    jy[:, 0, 1] = -beta * u
    jy[:, 1, 0] = delta * v
    jy[:, 1, 1] = delta * u - gamma
    f = np.empty_like(z)
    f[:, 0] = jy[:, 0, 0] * u
    f[:, 1] = jy[:, 1, 1] * v
    jp = np.zeros((len(z), 2, 4))
    jp[:, 0, 0] = u
    jp[:, 0, 1] = -u * v
    jp[:, 1, 2] = -v
    jp[:, 1, 3] = u * v
    return f, jy, jp


#: Lotka-Volterra's step (years, uniform) and the one-compartment model's (in sqrt(days),
#: graded, power 2), the coarsest keeping MAX_LOG_DENSITY_ERROR at the reference draws
LV_STEP, PK_STEP = 0.25, 0.1


def lotka_volterra(data: dict, step: float = LV_STEP) -> Model:
    """hudson_lynx_hare-lotka_volterra: prey ``u``, predators ``v``,

        du/dt = (alpha - beta v) u,   dv/dt = (-gamma + delta u) v,

    ``theta = (alpha, beta, gamma, delta) > 0``, ``z_init > 0``, ``sigma > 0``;
    ``theta_{1,3} ~ normal(1, 0.5)``, ``theta_{2,4} ~ normal(0.05, 0.05)``,
    ``sigma ~ lognormal(-1, 1)``, ``z_init ~ lognormal(log 10, 1)``,
    ``y_init ~ lognormal(log z_init, sigma)``, ``y_t ~ lognormal(log z(t), sigma)``."""
    grid, save = time_grid(0.0, [float(t) for t in data["ts"]], step)
    log_y_init, log_y = t64(data["y_init"]).log(), t64(data["y"]).log()
    prior_loc, prior_scale = t64([1.0, 0.05, 1.0, 0.05]), t64([0.5, 0.05, 0.5, 0.05])
    prior_sigma = LogNormal(-1.0, 1.0, validate_args=False)
    prior_z = LogNormal(math.log(10.0), 1.0, validate_args=False)

    def log_joint(p):
        z = rk4_solve(_lv_rhs, p.z_init, p.theta, grid, save)  # (C, N, 2)
        return (normal(prior_loc, prior_scale).log_prob(p.theta).sum(-1)
                + prior_sigma.log_prob(p.sigma).sum(-1) + prior_z.log_prob(p.z_init).sum(-1)
                + normal(p.z_init.log(), p.sigma).log_prob(log_y_init).sum(-1)
                + normal(z.log(), p.sigma[:, None]).log_prob(log_y).sum((-1, -2))
                - log_y_init.sum() - log_y.sum())

    return Model(log_joint, {"theta": Param((4,), constraints.positive),
                             "z_init": Param((2,), constraints.positive),
                             "sigma": Param((2,), constraints.positive)})


def _pk_rhs(dose_rate: float, volume: float) -> System:
    """``f = exp(-k_a t) k_a D / V - (V_m / V) C / (K_m + C)`` and its Jacobians, for
    ``p = (k_a, K_m, V_m)`` and ``dose_rate = D / V``."""

    def rhs(t: float, c: np.ndarray, p: np.ndarray):
        k_a, k_m, v_m = p[:, 0:1], p[:, 1:2], p[:, 2:3]
        absorb = np.exp(-k_a * t) * dose_rate
        denom = k_m + c
        f = absorb * k_a - (v_m / volume) * c / denom
        jy = (-(v_m / volume) * k_m / denom**2)[..., None]
        jp = np.empty((len(c), 1, 3))
        jp[:, :, 0] = absorb * (1 - k_a * t)
        jp[:, :, 1] = (v_m / volume) * c / denom**2
        jp[:, :, 2] = -c / (volume * denom)
        return f, jy, jp

    return rhs


def one_comp_mm_elim_abs(data: dict, step: float = PK_STEP) -> Model:
    """one_comp_mm_elim_abs-one_comp_mm_elim_abs: concentration ``C``, ``C(t0) = 0``,

        dC/dt = exp(-k_a t) D k_a / V - (V_m / V) C / (K_m + C),

    ``k_a, K_m, V_m, sigma > 0`` each ``~ cauchy(0, 1)``,
    ``C_hat_n ~ lognormal(log C(t_n), sigma)``. Stan's dose term is 0 at ``t = 0`` exactly
    (``if (t > 0)``): a single point, which changes no solution of the ODE, so the
    integrator uses the term's limit there (the jump at the first RK4 stage would be an
    ``O(h)`` error of the discretisation, not the model). The grid is graded (``power 2``):
    with small ``K_m`` the elimination switches on within ``C ~ K_m`` of the start."""
    t0 = float(data["t0"])
    grid, save = time_grid(t0, [float(t) for t in data["times"]], step, power=2.0)
    rhs = _pk_rhs(float(data["D"]) / float(data["V"]), float(data["V"]))
    log_c_hat = t64(data["C_hat"]).log()
    prior = Cauchy(0.0, 1.0, validate_args=False)

    def log_joint(p):
        params = torch.stack([p.k_a, p.K_m, p.V_m], -1)
        c = rk4_solve(rhs, params.new_zeros(len(params), 1), params, grid, save)[..., 0]
        return (prior.log_prob(params).sum(-1) + prior.log_prob(p.sigma)
                + normal(c.log(), p.sigma[:, None]).log_prob(log_c_hat).sum(-1)
                - log_c_hat.sum())

    return Model(log_joint, {name: Param((), constraints.positive)
                             for name in ("k_a", "K_m", "V_m", "sigma")})


PORTS = {
    "hudson_lynx_hare-lotka_volterra": lotka_volterra,
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs": one_comp_mm_elim_abs,
}
