"""posteriordb's ODE posteriors: Lotka-Volterra on the Hudson's Bay lynx-hare counts and a
one-compartment pharmacokinetic model (first-order absorption, Michaelis-Menten
elimination), solved by a differentiable fixed-step classical Runge-Kutta (RK4) batched
over chains.

Why fixed-step RK4 and not Stan's adaptive RK45 / BDF: a fixed grid is smooth in the
parameters (an adaptive solver's step choices make the solution, and so the energy, a
piecewise function of them, which NUTS's energy conservation feels), costs the same for
every chain (one batched step for all), and needs no new dependency. Its global error is
``O(h^4)``; the step is chosen so that the log density's error at Stan's reference draws
is below ``MAX_LOG_DENSITY_ERROR`` (checked by ``tests/test_posteriordb_ports.py`` against
the same solver at a quarter of the step): a density perturbed by at most ``eps`` in the
log moves any posterior mean by at most about ``eps`` posterior sds (importance weights
within ``exp(+-eps)``), far below the 4-standard-error bar (0.1 sd at ESS 1,600).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Cauchy, LogNormal, constraints

from benchmarks.posteriordb.common import normal, t64
from torchlangevin.model import Model, Param

__all__ = ["rk4", "lotka_volterra", "one_comp_mm_elim_abs", "MAX_LOG_DENSITY_ERROR",
           "PORTS"]

#: the largest |log density error| the ODE ports' steps allow at the reference draws
MAX_LOG_DENSITY_ERROR = 1e-3


def rk4(f: Callable[[float, Tensor], Tensor], y0: Tensor, t0: float, times: list[float],
        max_step: float) -> Tensor:
    """The solution of ``dy/dt = f(t, y)``, ``y(t0) = y0`` ``(C, D)``, at ``times``
    (increasing, after ``t0``), by classical RK4 with equal steps of at most ``max_step``
    between consecutive times:

        k1 = f(t, y), k2 = f(t + h/2, y + h/2 k1), k3 = f(t + h/2, y + h/2 k2),
        k4 = f(t + h, y + h k3), y <- y + h/6 (k1 + 2 k2 + 2 k3 + k4).

    Returns ``(C, len(times), D)``; differentiable in ``y0`` and whatever ``f`` closes over.
    """
    if not max_step > 0:
        raise ValueError(f"max_step must be > 0; got {max_step!r}")
    out, y, t = [], y0, float(t0)
    for t_next in times:
        if not t_next > t:
            raise ValueError(f"times must increase after t0={t0}; got {times!r}")
        n = math.ceil((t_next - t) / max_step - 1e-9)
        h = (t_next - t) / n
        for i in range(n):
            s = t + i * h
            k1 = f(s, y)
            k2 = f(s + h / 2, y + (h / 2) * k1)
            k3 = f(s + h / 2, y + (h / 2) * k2)
            k4 = f(s + h, y + h * k3)
            y = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(y)
        t = float(t_next)
    return torch.stack(out, 1)


#: RK4 steps (years) for Lotka-Volterra and (days) for the one-compartment model, chosen so
#: that the log density's error at every reference draw is below MAX_LOG_DENSITY_ERROR
LV_STEP, PK_STEP = 0.1, 0.05


def lotka_volterra(data: dict, step: float = LV_STEP) -> Model:
    """hudson_lynx_hare-lotka_volterra: prey ``u``, predators ``v``,

        du/dt = (alpha - beta v) u,   dv/dt = (-gamma + delta u) v,

    ``theta = (alpha, beta, gamma, delta) > 0``, ``z_init > 0``, ``sigma > 0``;
    ``theta_{1,3} ~ normal(1, 0.5)``, ``theta_{2,4} ~ normal(0.05, 0.05)``,
    ``sigma ~ lognormal(-1, 1)``, ``z_init ~ lognormal(log 10, 1)``,
    ``y_init ~ lognormal(log z_init, sigma)``, ``y_t ~ lognormal(log z(t), sigma)``."""
    ts, y_init, y = [float(t) for t in data["ts"]], t64(data["y_init"]), t64(data["y"])
    prior_loc, prior_scale = t64([1.0, 0.05, 1.0, 0.05]), t64([0.5, 0.05, 0.5, 0.05])
    prior_sigma = LogNormal(-1.0, 1.0, validate_args=False)
    prior_z = LogNormal(math.log(10.0), 1.0, validate_args=False)

    def log_joint(p):
        th = p.theta
        growth = torch.stack([th[:, 0], -th[:, 2]], -1)  # (C, 2)
        coupling = torch.stack([-th[:, 1], th[:, 3]], -1)

        def f(t, z):
            return z * (growth + coupling * z.flip(-1))

        z = rk4(f, p.z_init, 0.0, ts, step)  # (C, N, 2)
        return (normal(prior_loc, prior_scale).log_prob(th).sum(-1)
                + prior_sigma.log_prob(p.sigma).sum(-1) + prior_z.log_prob(p.z_init).sum(-1)
                + normal(p.z_init.log(), p.sigma).log_prob(y_init.log()).sum(-1)
                - y_init.log().sum()
                + normal(z.log(), p.sigma[:, None]).log_prob(y.log()).sum((-1, -2))
                - y.log().sum())

    return Model(log_joint, {"theta": Param((4,), constraints.positive),
                             "z_init": Param((2,), constraints.positive),
                             "sigma": Param((2,), constraints.positive)})


def one_comp_mm_elim_abs(data: dict, step: float = PK_STEP) -> Model:
    """one_comp_mm_elim_abs-one_comp_mm_elim_abs: concentration ``C``, ``C(t0) = 0``,

        dC/dt = exp(-k_a t) D k_a / V - (V_m / V) C / (K_m + C),

    ``k_a, K_m, V_m, sigma > 0`` each ``~ cauchy(0, 1)``,
    ``C_hat_n ~ lognormal(log C(t_n), sigma)``. Stan's dose term is 0 at ``t = 0`` exactly
    (``if (t > 0)``): a single point, which changes no solution of the ODE, so the
    integrator uses the term's limit there (evaluating the jump at the first RK4 stage
    would be an ``O(h)`` error of the discretisation, not the model)."""
    t0, dose, volume = float(data["t0"]), float(data["D"]), float(data["V"])
    times, c_hat = [float(t) for t in data["times"]], t64(data["C_hat"])
    prior = Cauchy(0.0, 1.0, validate_args=False)

    def log_joint(p):
        k_a, k_m, v_m = p.k_a[:, None], p.K_m[:, None], p.V_m[:, None]

        def f(t, c):
            return (torch.exp(-k_a * t) * (dose / volume) * k_a
                    - (v_m / volume) * c / (k_m + c))

        c = rk4(f, p.k_a.new_zeros(len(p.k_a), 1), t0, times, step)[..., 0]  # (C, N)
        return (prior.log_prob(p.k_a) + prior.log_prob(p.K_m) + prior.log_prob(p.V_m)
                + prior.log_prob(p.sigma)
                + normal(c.log(), p.sigma[:, None]).log_prob(c_hat.log()).sum(-1)
                - c_hat.log().sum())

    return Model(log_joint, {name: Param((), constraints.positive)
                             for name in ("k_a", "K_m", "V_m", "sigma")})


PORTS = {
    "hudson_lynx_hare-lotka_volterra": lotka_volterra,
    "one_comp_mm_elim_abs-one_comp_mm_elim_abs": one_comp_mm_elim_abs,
}
