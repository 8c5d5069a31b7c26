"""posteriordb posteriors ported to :class:`torchlangevin.model.Model`: Stan's parameters,
constraints (``real<lower=0>`` is ``positive``: Stan's ``exp`` transform and its Jacobian)
and priors (a parameter without a prior has Stan's improper flat one), in float64.

Each port is ``PORTS[posterior](data) -> Model``; parameter ``beta`` of shape ``(K,)`` is
Stan's ``beta[1]``..``beta[K]``.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributions import Normal, constraints

from torchlangevin.model import Model, Param

#: where the posteriordb subset lies (copied from stan-dev/posteriordb, see its README)
ROOT = Path(__file__).resolve().parents[3] / "shared" / "posteriordb"
if not ROOT.exists():
    ROOT = Path("/work/shared/posteriordb")


def read_zipped_json(path: Path) -> object:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def _normal(loc, scale) -> Normal:
    """A normal whose arguments are not checked: a trajectory may leave the support
    numerically (an energy of NaN is a divergence, where a check would raise)."""
    return Normal(loc, scale, validate_args=False)


def _t(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _regression(y: torch.Tensor, columns: list[torch.Tensor]) -> Model:
    """``y ~ normal(X beta, sigma)``, ``X = [1, columns...]``, flat priors on ``beta`` and
    ``sigma > 0`` (Stan's earnings, kidiq and nes models)."""
    design = torch.stack([torch.ones_like(y), *columns], -1)  # (N, K)

    def log_joint(p):
        mean = p.beta @ design.T  # (C, N)
        return _normal(mean, p.sigma[..., None]).log_prob(y).sum(-1)

    return Model(log_joint, {"beta": Param((design.shape[1],)),
                             "sigma": Param((), constraints.positive)})


def kidscore_mom_work(data: dict) -> Model:
    """kidiq_with_mom_work-kidscore_mom_work: kid_score on mom_work's indicators 2, 3, 4."""
    work = torch.tensor(data["mom_work"])
    return _regression(_t(data["kid_score"]), [(work == k).double() for k in (2, 3, 4)])


def logearn_interaction_z(data: dict) -> Model:
    """earnings-logearn_interaction_z: log earn on z(height), male and their product
    (Stan's ``sd`` is the sample sd, N - 1)."""
    height, male = _t(data["height"]), _t(data["male"])
    z = (height - height.mean()) / height.std()
    return _regression(_t(data["earn"]).log(), [z, male, z * male])


def kilpisjarvi(data: dict) -> Model:
    """kilpisjarvi_mod-kilpisjarvi: y on the year x with normal priors; x ~ 2000 makes
    alpha and beta correlated to ~ -1 (the case a dense mass is for)."""
    x, y = _t(data["x"]), _t(data["y"])
    prior_a = _normal(float(data["pmualpha"]), float(data["psalpha"]))
    prior_b = _normal(float(data["pmubeta"]), float(data["psbeta"]))

    def log_joint(p):
        mean = p.alpha[..., None] + p.beta[..., None] * x
        return (prior_a.log_prob(p.alpha) + prior_b.log_prob(p.beta)
                + _normal(mean, p.sigma[..., None]).log_prob(y).sum(-1))

    return Model(log_joint, {"alpha": Param(), "beta": Param(),
                             "sigma": Param((), constraints.positive)})


def nes(data: dict) -> Model:
    """nesYEAR-nes: partyid7 on ideology, race, age group indicators, education, gender
    and income."""
    age = torch.tensor(data["age_discrete"])
    columns = [_t(data[k]) for k in ("real_ideo", "race_adj")]
    columns += [(age == k).double() for k in (2, 3, 4)]
    columns += [_t(data[k]) for k in ("educ1", "gender", "income")]
    return _regression(_t(data["partyid7"]), columns)


PORTS: dict[str, Callable[[dict], Model]] = {
    "kidiq_with_mom_work-kidscore_mom_work": kidscore_mom_work,
    "earnings-logearn_interaction_z": logearn_interaction_z,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "nes1972-nes": nes,
}


def load(posterior: str) -> tuple[Model, dict[str, torch.Tensor]]:
    """The port of ``posterior`` on its data, and Stan's reference draws by Stan name,
    each ``(10 chains, 1000 draws)``."""
    info = json.loads((ROOT / "posteriors" / f"{posterior}.json").read_text())
    data = read_zipped_json(ROOT / "data" / f"{info['data_name']}.json.zip")
    chains = read_zipped_json(ROOT / "reference_draws" / f"{posterior}.json.zip")
    reference = {k: _t([c[k] for c in chains]) for k in chains[0]}
    return PORTS[posterior](data), reference
