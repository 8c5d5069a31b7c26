"""The linear regressions of posteriordb (earnings, kidiq, kilpisjarvi, nes): Stan's
``y ~ normal(X beta, sigma)`` with Stan's transformed data, flat priors on ``beta`` and on
``sigma > 0`` (Stan's ``exp`` transform and its Jacobian) unless the model gives one."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import constraints

from benchmarks.posteriordb.common import normal, t64
from torchlangevin.model import Model, Param


def _regression(y: Tensor, columns: list[Tensor]) -> Model:
    """``y ~ normal(X beta, sigma)``, ``X = [1, columns...]``, flat priors on ``beta`` and
    ``sigma > 0``. The model keeps ``response`` (``y``) and ``design`` (``X``): its exact
    posterior is known (``beta`` is multivariate t, see ``tests/test_posteriordb_ports.py``)."""
    design = torch.stack([torch.ones_like(y), *columns], -1)  # (N, K)

    def log_joint(p):
        mean = p.beta @ design.T  # (C, N)
        return normal(mean, p.sigma[..., None]).log_prob(y).sum(-1)

    model = Model(log_joint, {"beta": Param((design.shape[1],)),
                              "sigma": Param((), constraints.positive)})
    model.response, model.design = y, design
    return model


def _sd(x: Tensor) -> Tensor:
    """Stan's ``sd``: the sample sd, divisor N - 1 (torch's default)."""
    return x.std()


# --- earnings: earn (dollars), height (inches), male (0/1), N = 1192 ---------------------

def earn_height(data: dict) -> Model:
    """earnings-earn_height: earn on height."""
    return _regression(t64(data["earn"]), [t64(data["height"])])


def log10earn_height(data: dict) -> Model:
    """earnings-log10earn_height: log10 earn on height."""
    return _regression(t64(data["earn"]).log10(), [t64(data["height"])])


def logearn_height(data: dict) -> Model:
    """earnings-logearn_height: log earn on height."""
    return _regression(t64(data["earn"]).log(), [t64(data["height"])])


def logearn_height_male(data: dict) -> Model:
    """earnings-logearn_height_male: log earn on height and male."""
    return _regression(t64(data["earn"]).log(), [t64(data["height"]), t64(data["male"])])


def logearn_interaction(data: dict) -> Model:
    """earnings-logearn_interaction: log earn on height, male and height * male."""
    height, male = t64(data["height"]), t64(data["male"])
    return _regression(t64(data["earn"]).log(), [height, male, height * male])


def logearn_interaction_z(data: dict) -> Model:
    """earnings-logearn_interaction_z: log earn on z(height), male and their product
    (``z = (x - mean) / sd``)."""
    height, male = t64(data["height"]), t64(data["male"])
    z = (height - height.mean()) / _sd(height)
    return _regression(t64(data["earn"]).log(), [z, male, z * male])


def logearn_logheight_male(data: dict) -> Model:
    """earnings-logearn_logheight_male: log earn on log height and male."""
    return _regression(t64(data["earn"]).log(), [t64(data["height"]).log(),
                                                  t64(data["male"])])


# --- kidiq_with_mom_work: kid_score, mom_hs (0/1), mom_iq, mom_work (1..4), N = 434 ------

def _kid_interaction(data: dict, hs: Tensor, iq: Tensor) -> Model:
    return _regression(t64(data["kid_score"]), [hs, iq, hs * iq])


def kidscore_interaction_c(data: dict) -> Model:
    """kidiq_with_mom_work-kidscore_interaction_c: mom_hs and mom_iq centred at their
    means, and their product."""
    hs, iq = t64(data["mom_hs"]), t64(data["mom_iq"])
    return _kid_interaction(data, hs - hs.mean(), iq - iq.mean())


def kidscore_interaction_c2(data: dict) -> Model:
    """kidiq_with_mom_work-kidscore_interaction_c2: centred at 0.5 and 100."""
    return _kid_interaction(data, t64(data["mom_hs"]) - 0.5, t64(data["mom_iq"]) - 100.0)


def kidscore_interaction_z(data: dict) -> Model:
    """kidiq_with_mom_work-kidscore_interaction_z: ``(x - mean) / (2 sd)``."""
    hs, iq = t64(data["mom_hs"]), t64(data["mom_iq"])
    return _kid_interaction(data, (hs - hs.mean()) / (2 * _sd(hs)),
                            (iq - iq.mean()) / (2 * _sd(iq)))


def kidscore_mom_work(data: dict) -> Model:
    """kidiq_with_mom_work-kidscore_mom_work: kid_score on mom_work's indicators 2, 3, 4."""
    work = torch.tensor(data["mom_work"])
    return _regression(t64(data["kid_score"]), [(work == k).double() for k in (2, 3, 4)])


# --- kilpisjarvi_mod, nes -----------------------------------------------------------------

def kilpisjarvi(data: dict) -> Model:
    """kilpisjarvi_mod-kilpisjarvi: y on the year x with normal priors; x ~ 2000 makes
    alpha and beta correlated to ~ -1 (the case a dense mass is for)."""
    x, y = t64(data["x"]), t64(data["y"])
    prior_a = normal(float(data["pmualpha"]), float(data["psalpha"]))
    prior_b = normal(float(data["pmubeta"]), float(data["psbeta"]))

    def log_joint(p):
        mean = p.alpha[..., None] + p.beta[..., None] * x
        return (prior_a.log_prob(p.alpha) + prior_b.log_prob(p.beta)
                + normal(mean, p.sigma[..., None]).log_prob(y).sum(-1))

    return Model(log_joint, {"alpha": Param(), "beta": Param(),
                             "sigma": Param((), constraints.positive)})


def nes(data: dict) -> Model:
    """nesYEAR-nes: partyid7 on ideology, race, age group indicators, education, gender
    and income."""
    age = torch.tensor(data["age_discrete"])
    columns = [t64(data[k]) for k in ("real_ideo", "race_adj")]
    columns += [(age == k).double() for k in (2, 3, 4)]
    columns += [t64(data[k]) for k in ("educ1", "gender", "income")]
    return _regression(t64(data["partyid7"]), columns)


PORTS = {
    **{f"earnings-{f.__name__}": f for f in (
        earn_height, log10earn_height, logearn_height, logearn_height_male,
        logearn_interaction, logearn_interaction_z, logearn_logheight_male)},
    **{f"kidiq_with_mom_work-{f.__name__}": f for f in (
        kidscore_interaction_c, kidscore_interaction_c2, kidscore_interaction_z,
        kidscore_mom_work)},
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    **{f"nes{year}-nes": nes for year in range(1972, 2001, 4)},
}
