"""posteriordb's time-series and mixture posteriors: ARMA(1, 1), a two-component normal
mixture with ordered means, and three two-state hidden Markov models (Stan's forward
algorithm, computed as a log-semiring matrix product in ``log2 N`` batched rounds)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import Beta, Cauchy, Dirichlet, constraints

from benchmarks.posteriordb.common import normal, ordered_vector, positive_ordered_vector, t64
from torchlangevin.model import Model, Param

__all__ = ["arma11", "low_dim_gauss_mix", "hmm_example", "hmm_drive_0", "hmm_drive_1",
           "linear_recurrence", "log_matmul", "hmm_forward", "PORTS"]


def linear_recurrence(a: Tensor, c: Tensor) -> Tensor:
    """``x_t = a_t + c x_{t-1}``, ``x_1 = a_1``, over the last dimension of ``a``
    ``(C, T)`` with one ``c`` per row ``(C,)``: ``x_t = sum_{s <= t} c^{t-s} a_s``, by
    doubling (after round ``j``, ``x`` holds the sums over the last ``2^j`` terms):

        x <- x + c^(2^j) * shift(x, 2^j).
    """
    x, power, lag = a, c[:, None], 1
    while lag < a.shape[-1]:
        shifted = torch.cat([torch.zeros_like(x[:, :lag]), x[:, :-lag]], -1)
        x = x + power * shifted
        power, lag = power * power, 2 * lag
    return x


def log_matmul(a: Tensor, b: Tensor) -> Tensor:
    """The log-semiring product ``(a (x) b)_ik = logsumexp_j (a_ij + b_jk)``, batched."""
    return torch.logsumexp(a[..., :, :, None] + b[..., None, :, :], dim=-2)


def hmm_forward(log_theta: Tensor, log_emission: Tensor) -> Tensor:
    """Stan's forward algorithm (no initial distribution: ``gamma_1 = e_1``),

        gamma_t(k) = logsumexp_j (gamma_{t-1}(j) + log theta_jk) + e_t(k),
        log p = logsumexp_k gamma_N(k),

    for ``log_theta (C, K, K)`` (row ``j``: from state ``j``) and ``log_emission
    (C, N, K)``: the product ``gamma_1 (x) M_2 (x) ... (x) M_N``,
    ``M_t = log theta + e_t``, multiplied pairwise in ``ceil(log2 N)`` rounds."""
    m = log_theta[:, None] + log_emission[:, 1:, None, :]  # (C, N-1, K, K)
    while m.shape[1] > 1:
        n = m.shape[1] // 2 * 2
        pairs = log_matmul(m[:, 0:n:2], m[:, 1:n:2])
        m = torch.cat([pairs, m[:, n:]], 1)
    gamma_n = torch.logsumexp(log_emission[:, 0, :, None] + m[:, 0], dim=-2)  # (C, K)
    return torch.logsumexp(gamma_n, -1)


def arma11(data: dict) -> Model:
    """arma-arma11: ``nu_t = mu + phi y_{t-1} + theta err_{t-1}``, ``err_t = y_t - nu_t``,
    ``nu_1 = mu + phi mu``, ``err ~ normal(0, sigma)``; so
    ``err_t = a_t - theta err_{t-1}`` with ``a_t = y_t - mu - phi y_{t-1}``."""
    y = t64(data["y"])
    prior_sigma = Cauchy(0.0, 2.5, validate_args=False)

    def log_joint(p):
        lagged = torch.cat([p.mu[:, None], y[None, :-1].expand(len(p.mu), -1)], -1)
        a = y - p.mu[:, None] - p.phi[:, None] * lagged
        err = linear_recurrence(a, -p.theta)
        return (normal(0.0, 10.0).log_prob(p.mu) + normal(0.0, 2.0).log_prob(p.phi)
                + normal(0.0, 2.0).log_prob(p.theta) + prior_sigma.log_prob(p.sigma)
                + normal(0.0, p.sigma[:, None]).log_prob(err).sum(-1))

    return Model(log_joint, {"mu": Param(), "phi": Param(), "theta": Param(),
                             "sigma": Param((), constraints.positive)})


def low_dim_gauss_mix(data: dict) -> Model:
    """low_dim_gauss_mix: ``log_mix(theta, normal(y | mu_1, sigma_1), normal(y | mu_2,
    sigma_2))`` with ``mu`` ordered (Stan's ordered transform), ``sigma ~ normal(0, 2)``
    on ``sigma > 0``, ``mu ~ normal(0, 2)``, ``theta ~ beta(5, 5)``."""
    y = t64(data["y"])
    prior_theta = Beta(5.0, 5.0, validate_args=False)

    def log_joint(p):
        lp = normal(p.mu[:, None, :], p.sigma[:, None, :]).log_prob(y[None, :, None])
        w = torch.stack([p.theta.log(), torch.log1p(-p.theta)], -1)  # (C, 2)
        return (normal(0.0, 2.0).log_prob(p.sigma).sum(-1)
                + normal(0.0, 2.0).log_prob(p.mu).sum(-1) + prior_theta.log_prob(p.theta)
                + torch.logsumexp(w[:, None, :] + lp, -1).sum(-1))

    return Model(log_joint, {"mu": Param((2,), ordered_vector),
                             "sigma": Param((2,), constraints.positive),
                             "theta": Param((), constraints.unit_interval)})


def _transitions() -> dict[str, Param]:
    return {"theta1": Param((2,), constraints.simplex),
            "theta2": Param((2,), constraints.simplex)}


def _log_theta(p) -> Tensor:
    return torch.stack([p.theta1, p.theta2], -2).log()  # (C, K, K), row j from state j


def hmm_example(data: dict) -> Model:
    """hmm_example: two states, ``y_t ~ normal(mu_k, 1)``, ``mu`` positive_ordered with
    ``mu_1 ~ normal(3, 1)``, ``mu_2 ~ normal(10, 1)``, flat priors on the transition
    simplexes ``theta1``, ``theta2``."""
    y = t64(data["y"])

    def log_joint(p):
        emission = normal(p.mu[:, None, :], 1.0).log_prob(y[None, :, None])
        return (normal(3.0, 1.0).log_prob(p.mu[:, 0]) + normal(10.0, 1.0).log_prob(p.mu[:, 1])
                + hmm_forward(_log_theta(p), emission))

    return Model(log_joint, {**_transitions(), "mu": Param((2,), positive_ordered_vector)})


def _drive(data: dict, emission, constraint: constraints.Constraint) -> Model:
    """bball_drive_event: transitions ``theta_k ~ dirichlet(alpha_k)``;
    ``phi_1, lambda_1 ~ normal(0, 1)``, ``phi_2, lambda_2 ~ normal(3, 1)``; emissions of
    ``u`` (1/speed) and ``v`` (hoop distance) given by ``emission(p, u, v) -> (C, N, K)``."""
    u, v, alpha = t64(data["u"]), t64(data["v"]), t64(data["alpha"])
    priors = [Dirichlet(alpha[k], validate_args=False) for k in range(2)]
    loc = t64([0.0, 3.0])

    def log_joint(p):
        return (priors[0].log_prob(p.theta1) + priors[1].log_prob(p.theta2)
                + normal(loc, 1.0).log_prob(p.phi).sum(-1)
                + normal(loc, 1.0).log_prob(p["lambda"]).sum(-1)
                + hmm_forward(_log_theta(p), emission(p, u, v)))

    return Model(log_joint, {**_transitions(), "phi": Param((2,), constraint),
                             "lambda": Param((2,), constraint)})


def hmm_drive_0(data: dict) -> Model:
    """bball_drive_event_0-hmm_drive_0: exponential emissions with rates ``phi``,
    ``lambda`` (positive_ordered): ``log phi_k - phi_k u_t + log lambda_k - lambda_k v_t``."""
    def emission(p, u, v):
        phi, lam = p.phi[:, None, :], p["lambda"][:, None, :]
        return phi.log() - phi * u[:, None] + lam.log() - lam * v[:, None]

    return _drive(data, emission, positive_ordered_vector)


def hmm_drive_1(data: dict) -> Model:
    """bball_drive_event_1-hmm_drive_1: normal emissions ``u ~ normal(phi_k, tau)``,
    ``v ~ normal(lambda_k, rho)``, ``phi``, ``lambda`` ordered."""
    tau, rho = float(data["tau"]), float(data["rho"])

    def emission(p, u, v):
        return (normal(p.phi[:, None, :], tau).log_prob(u[:, None])
                + normal(p["lambda"][:, None, :], rho).log_prob(v[:, None]))

    return _drive(data, emission, ordered_vector)


PORTS = {
    "arma-arma11": arma11,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
    "hmm_example-hmm_example": hmm_example,
    "bball_drive_event_0-hmm_drive_0": hmm_drive_0,
    "bball_drive_event_1-hmm_drive_1": hmm_drive_1,
}
