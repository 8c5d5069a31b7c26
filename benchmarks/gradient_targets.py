"""Targets of the gradient benchmark (``benchmarks/gradients.py``): data and ground truth.

numpy only, so both sides import it: our main venv (torch energies in
``gradient_targets_torch.py``) and the BlackJAX venv (JAX log densities in
``peers/blackjax_gradients.py``). Every data set is generated here from a fixed seed
(breast_cancer ships inside scikit-learn): nothing is downloaded.

The definitions follow the MAMS paper's benchmark set (Robnik et al., arXiv 2503.01707,
and its sampler-benchmarks repository, itself mostly inference-gym). Each target is a
density on unconstrained ``x in R^d``; the metric is taken on ``f(x)`` (``transform``),
the coordinates the paper scores (constrained scales for Brownian motion and stochastic
volatility, Gaussianised coordinates for the funnel), with

    b^2_i(n) = (mean over chains of (1/n) sum_{k<=n} f_i(x_k)^2  -  E[f_i^2])^2 / Var[f_i^2].

``E[f^2]`` and ``Var[f^2]`` are closed forms where they exist (Gaussians, banana,
Rosenbrock pairs, funnel; checked against exact draws in
``tests/test_gradient_targets.py``) and otherwise long reference runs stored in
``benchmarks/reference/<name>.npz`` (see ``benchmarks/reference/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
Array = np.ndarray


@dataclass(frozen=True)
class Target:
    """One benchmark target.

    Attributes:
        name: registry key.
        dim: ``d``.
        data: observed data and constants, the same arrays for the torch and JAX densities.
        transform: ``f``, the metric's coordinates: ``(..., d) -> (..., d)``.
        exact: ``(E[f^2], Var[f^2])`` in closed form, or ``None`` (then ``reference``).
        sampler: exact draws ``(rng, n) -> (n, d)`` where a generative sampler exists.
        note: one line on the definition, for the report.
    """

    name: str
    dim: int
    data: dict[str, Array] = field(default_factory=dict)
    transform: Callable[[Array], Array] = lambda x: x
    exact: tuple[Array, Array] | None = None
    sampler: Callable[[np.random.Generator, int], Array] | None = None
    note: str = ""

    @property
    def reference(self) -> Path:
        return REFERENCE_DIR / f"{self.name}.npz"

    def moments(self) -> tuple[Array, Array]:
        """``(E[f(x)^2], Var[f(x)^2])`` per parameter, exact or from the stored reference."""
        if self.exact is not None:
            return self.exact
        if not self.reference.exists():
            raise FileNotFoundError(
                f"{self.reference} missing: make it with `python "
                f"benchmarks/peers/blackjax_gradients.py --reference {self.name}` (BlackJAX venv)")
        ref = np.load(self.reference)
        return ref["e_x2"], ref["var_x2"]

    def x0(self, n_chains: int, seed: int) -> Array:
        """Starting points, the same on both sides: ``N(0, I)`` in the unconstrained space
        (as sampler-benchmarks starts its chains), float32."""
        rng = np.random.default_rng([seed, _stable_hash(self.name)])
        return rng.standard_normal((n_chains, self.dim)).astype(np.float32)


def _stable_hash(name: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(name)) % (2**31)


# ----------------------------------------------------------------------------- exact
def banana(curvature: float = 0.03) -> Target:
    """inference-gym's Banana: ``x0 ~ N(0, 10^2)``, ``x1 | x0 ~ N(c (x0^2 - 100), 1)``.

    With ``x0 = 10 u``, ``a = 100 c``: ``x1 = a (u^2 - 1) + z``; chi-square moments
    ``E[(u^2-1)^2] = 2``, ``E[(u^2-1)^4] = 60`` give ``E[x1^2] = 2a^2 + 1`` and
    ``E[x1^4] = 60 a^4 + 12 a^2 + 3``; ``E[x0^2] = 100``, ``Var[x0^2] = 2 * 100^2``.
    """
    a = 100.0 * curvature
    e2 = np.array([100.0, 2 * a**2 + 1])
    e4 = np.array([3 * 100.0**2, 60 * a**4 + 12 * a**2 + 3])

    def draw(rng: np.random.Generator, n: int) -> Array:
        x0 = 10.0 * rng.standard_normal(n)
        return np.stack([x0, curvature * (x0**2 - 100) + rng.standard_normal(n)], -1)

    return Target("banana", 2, {"curvature": np.array(curvature)}, exact=(e2, e4 - e2**2),
                  sampler=draw, note="inference-gym Banana, curvature 0.03, 2-D")


def gaussian(condition: float, dim: int = 100) -> Target:
    """Unrotated ill-conditioned Gaussian (the MAMS paper's ``eigenvalues='log'``):
    variances ``sigma_i^2`` log-spaced on ``[kappa^-1/2, kappa^1/2]``;
    ``E[x^2] = sigma^2``, ``Var[x^2] = 2 sigma^4``."""
    var = np.logspace(-0.5 * np.log10(condition), 0.5 * np.log10(condition), dim)

    def draw(rng: np.random.Generator, n: int) -> Array:
        return rng.standard_normal((n, dim)) * np.sqrt(var)

    return Target(f"gaussian_k{condition:.0e}".replace("+0", "").replace("+", ""), dim,
                  {"var": var}, exact=(var, 2 * var**2), sampler=draw,
                  note=f"{dim}-D diagonal Gaussian, condition number {condition:g}")


def rosenbrock(pairs: int = 18, q: float = 0.1) -> Target:
    """``pairs`` independent Rosenbrock pairs (MCHMC/MAMS), ``x = (a_1..a_P, b_1..b_P)``:
    ``log p = -sum (a - 1)^2 / 2 - sum (b - a^2)^2 / (2Q)``, so ``a ~ N(1, 1)``,
    ``b | a ~ N(a^2, Q)``. With ``a = 1 + u``: ``E[a^2] = 2``, ``E[a^4] = 10``,
    ``E[a^8] = 764``; ``E[b^2] = 10 + Q``, ``E[b^4] = E[a^8] + 6Q E[a^4] + 3Q^2``."""
    e2 = np.array([2.0] * pairs + [10.0 + q] * pairs)
    e4 = np.array([10.0] * pairs + [764.0 + 60.0 * q + 3 * q**2] * pairs)

    def draw(rng: np.random.Generator, n: int) -> Array:
        a = 1.0 + rng.standard_normal((n, pairs))
        return np.concatenate([a, a**2 + np.sqrt(q) * rng.standard_normal((n, pairs))], -1)

    return Target(f"rosenbrock{2 * pairs}", 2 * pairs, {"q": np.array(q)},
                  exact=(e2, e4 - e2**2), sampler=draw,
                  note=f"{pairs} Rosenbrock pairs, Q={q}")


def _funnel_transform(x: Array) -> Array:
    """Gaussianised funnel coordinates ``(z e^{-theta/2}, theta / 3)``: iid ``N(0, 1)``."""
    theta = x[..., -1:]
    return np.concatenate([x[..., :-1] * np.exp(-0.5 * theta), theta / 3.0], -1)


def funnel(dim: int = 10, sigma: float = 3.0) -> Target:
    """Neal's funnel, ``x = (z_1..z_{d-1}, theta)``, ``theta ~ N(0, 3^2)``,
    ``z_i | theta ~ N(0, e^theta)``; scored, as in the MAMS paper, on the Gaussianised
    coordinates, which are iid ``N(0, 1)``: ``E[f^2] = 1``, ``Var[f^2] = 2``."""

    def draw(rng: np.random.Generator, n: int) -> Array:
        theta = sigma * rng.standard_normal((n, 1))
        return np.concatenate([np.exp(0.5 * theta) * rng.standard_normal((n, dim - 1)),
                               theta], -1)

    return Target(f"funnel{dim}", dim, {"sigma": np.array(sigma)},
                  transform=_funnel_transform, exact=(np.ones(dim), 2 * np.ones(dim)),
                  sampler=draw, note=f"Neal's funnel {dim}-D, theta last, Gaussianised")


# ------------------------------------------------------------------------- reference
def _scales_then_rest(x: Array, n_scales: int, front: bool) -> Array:
    """``exp`` of the log-scale coordinates (first or last ``n_scales``), identity elsewhere."""
    out = np.array(x, dtype=np.float64, copy=True)
    idx = slice(0, n_scales) if front else slice(-n_scales, None)
    out[..., idx] = np.exp(out[..., idx])
    return out


def brownian(n_steps: int = 30, missing: tuple[int, int] = (10, 20), seed: int = 1) -> Target:
    """inference-gym's BrownianMotionUnknownScalesMissingMiddleObservations on synthetic
    data: ``x = (log s_innov, log s_obs, loc_1..loc_30)``, ``log s ~ N(0, 2^2)``
    (LogNormal(0, 2) scales), ``loc_t ~ N(loc_{t-1}, s_innov)`` with ``loc_0 = 0``,
    ``y_t ~ N(loc_t, s_obs)`` observed outside ``missing`` (10 of 30 missing).
    Data: one draw with ``s_innov = 0.1``, ``s_obs = 0.15``. Scored on the scales."""
    rng = np.random.default_rng(seed)
    locs = np.cumsum(0.1 * rng.standard_normal(n_steps))
    y = locs + 0.15 * rng.standard_normal(n_steps)
    observed = np.ones(n_steps, dtype=bool)
    observed[missing[0]:missing[1]] = False
    return Target("brownian", n_steps + 2, {"y": np.where(observed, y, 0.0),
                                             "observed": observed.astype(np.float64)},
                  transform=lambda x: _scales_then_rest(x, 2, front=True),
                  note="Brownian motion, 30 steps, 10 missing, unknown scales, 32-D")


def item_response(n_students: int = 400, n_questions: int = 100, frac: float = 0.75,
                  seed: int = 2) -> Target:
    """inference-gym's SyntheticItemResponseTheory (1PL): ``x = (mu, a_1..a_400,
    b_1..b_100)``, ``mu ~ N(0.75, 1)``, ``a, b ~ N(0, 1)``,
    ``y_sq ~ Bernoulli(sigmoid(mu + a_s - b_q))``, each pair observed with probability
    ``frac``; responses drawn from the prior's one draw (seed fixed). 501-D."""
    rng = np.random.default_rng(seed)
    mu = 0.75 + rng.standard_normal()
    a, b = rng.standard_normal(n_students), rng.standard_normal(n_questions)
    s, q = np.nonzero(rng.random((n_students, n_questions)) < frac)
    y = rng.random(s.size) < 1.0 / (1.0 + np.exp(-(mu + a[s] - b[q])))
    return Target("item_response", 1 + n_students + n_questions,
                  {"student": s.astype(np.int64), "question": q.astype(np.int64),
                   "y": y.astype(np.float64), "n_students": np.array(n_students)},
                  note=f"IRT 1PL, {n_students} students x {n_questions} questions, "
                       f"{s.size} synthetic responses")


def logistic_breast_cancer() -> Target:
    """Bayesian logistic regression on scikit-learn's breast_cancer (bundled with it,
    standing in for German credit): standardised features plus an intercept column,
    ``w ~ N(0, I)``, ``y ~ Bernoulli(sigmoid(X w))``. 31-D."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = (data.data - data.data.mean(0)) / data.data.std(0)
    x = np.concatenate([np.ones((x.shape[0], 1)), x], 1)
    return Target("logreg_breast_cancer", x.shape[1],
                  {"X": x, "y": data.target.astype(np.float64)},
                  note="logistic regression, breast_cancer (569 x 30 + intercept)")


def stochastic_volatility(n_days: int = 250, seed: int = 3) -> Target:
    """The MAMS paper's stochastic volatility (NumPyro's model, MCHMC's parametrisation)
    on synthetic returns: ``x = (s_1..s_T, u_sigma, u_nu)``, ``sigma = 0.02 e^{u_sigma}``
    with ``sigma ~ Exp(rate 50)``, ``nu = 10 e^{u_nu}`` with ``nu ~ Exp(rate 0.1)``,
    ``s`` a Gaussian random walk of scale ``sigma`` from 0, returns
    ``r_t ~ StudentT(nu, 0, e^{s_t})``. The returns are one draw from the model with
    ``sigma = 0.05``, ``nu = 8`` (heavy-tailed, clustered volatility, like daily SP500
    returns up to scale), ``T = 250`` (a trading year: runs here in minutes; the paper
    used 2427 real days). Scored on ``(s, sigma, nu)``."""
    rng = np.random.default_rng(seed)
    s = np.cumsum(0.05 * rng.standard_normal(n_days))
    r = np.exp(s) * rng.standard_t(8.0, n_days)

    def transform(x: Array) -> Array:
        out = np.array(x, dtype=np.float64, copy=True)
        out[..., -2] = 0.02 * np.exp(out[..., -2])
        out[..., -1] = 10.0 * np.exp(out[..., -1])
        return out

    return Target("stochastic_volatility", n_days + 2, {"returns": r}, transform=transform,
                  note=f"stochastic volatility, {n_days} synthetic days, Student-t returns")


BUILDERS: dict[str, Callable[[], Target]] = {
    "banana": banana,
    "gaussian_k1e2": lambda: gaussian(1e2),
    "gaussian_k1e4": lambda: gaussian(1e4),
    "rosenbrock36": rosenbrock,
    "funnel10": funnel,
    "brownian": brownian,
    "item_response": item_response,
    "logreg_breast_cancer": logistic_breast_cancer,
    "stochastic_volatility": stochastic_volatility,
}
QUICK = ["banana", "gaussian_k1e2", "funnel10"]


def get(name: str) -> Target:
    """The target registered under ``name`` (its ``name`` field equals the key)."""
    target = BUILDERS[name]()
    if target.name != name:
        target = Target(name, target.dim, target.data, target.transform, target.exact,
                        target.sampler, target.note)
    return target
