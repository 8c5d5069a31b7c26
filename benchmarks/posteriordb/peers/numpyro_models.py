"""NumPyro versions of the posteriors the ESS-per-second benchmark compares (Stan's models:
the same parameters, constraints and priors as ``benchmarks/posteriordb/ports.py``; a
parameter without a prior gets Stan's improper flat one, ``ImproperUniform``), and the
eight schools in both forms as ``tests/test_model.py`` and ``tests/test_pyro_model.py``
write them. Runs in its own venv (``.bench/numpyro``): no torch here.

``MODELS[name](data) -> (model, kwargs)``; ``load(name)`` reads a posteriordb posterior's
data (or the eight schools' numbers) and builds it.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

#: the posteriordb subset (see benchmarks/posteriordb/ports.py)
ROOT = Path(__file__).resolve().parents[4] / "shared" / "posteriordb"
if not ROOT.exists():
    ROOT = Path("/work/shared/posteriordb")

EIGHT_SCHOOLS = {"J": 8, "y": [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0],
                 "sigma": [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]}


def read_zipped_json(path: Path) -> object:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def _a(values) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values, dtype=np.float64))


def regression(y, design):
    """``y ~ normal(X beta, sigma)``, flat priors on ``beta`` and on ``sigma > 0``."""
    k = design.shape[1]
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real, (), (k,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
    numpyro.sample("y", dist.Normal(design @ beta, sigma), obs=y)


def _design(*columns) -> jnp.ndarray:
    columns = [_a(c) for c in columns]
    return jnp.stack([jnp.ones_like(columns[0]), *columns], -1)


def kidscore_mom_work(data: dict):
    work = np.asarray(data["mom_work"])
    x = _design(*[(work == k).astype(float) for k in (2, 3, 4)])
    return regression, {"y": _a(data["kid_score"]), "design": x}


def _kid(data: dict, hs, iq):
    return regression, {"y": _a(data["kid_score"]), "design": _design(hs, iq, hs * iq)}


def kidscore_interaction_c(data: dict):
    hs, iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    return _kid(data, hs - hs.mean(), iq - iq.mean())


def kidscore_interaction_c2(data: dict):
    hs, iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    return _kid(data, hs - 0.5, iq - 100.0)


def kidscore_interaction_z(data: dict):
    hs, iq = np.asarray(data["mom_hs"], float), np.asarray(data["mom_iq"], float)
    return _kid(data, (hs - hs.mean()) / (2 * hs.std(ddof=1)),
                (iq - iq.mean()) / (2 * iq.std(ddof=1)))


def _earnings(y, *columns):
    return regression, {"y": _a(y), "design": _design(*columns)}


def earn_height(data: dict):
    return _earnings(data["earn"], data["height"])


def log10earn_height(data: dict):
    return _earnings(np.log10(data["earn"]), data["height"])


def logearn_height(data: dict):
    return _earnings(np.log(data["earn"]), data["height"])


def logearn_height_male(data: dict):
    return _earnings(np.log(data["earn"]), data["height"], data["male"])


def logearn_interaction(data: dict):
    h, m = np.asarray(data["height"], float), np.asarray(data["male"], float)
    return _earnings(np.log(data["earn"]), h, m, h * m)


def logearn_interaction_z(data: dict):
    h, m = np.asarray(data["height"], float), np.asarray(data["male"], float)
    z = (h - h.mean()) / h.std(ddof=1)  # Stan's sd: the sample sd
    return _earnings(np.log(data["earn"]), z, m, z * m)


def logearn_logheight_male(data: dict):
    return _earnings(np.log(data["earn"]), np.log(data["height"]), data["male"])


def nes(data: dict):
    age = np.asarray(data["age_discrete"])
    columns = [data["real_ideo"], data["race_adj"]]
    columns += [(age == k).astype(float) for k in (2, 3, 4)]
    columns += [data[k] for k in ("educ1", "gender", "income")]
    return _earnings(data["partyid7"], *columns)


def _kilpisjarvi(x, y, pa, sa, pb, sb):
    alpha = numpyro.sample("alpha", dist.Normal(pa, sa))
    beta = numpyro.sample("beta", dist.Normal(pb, sb))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
    numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def kilpisjarvi(data: dict):
    return _kilpisjarvi, {"x": _a(data["x"]), "y": _a(data["y"]),
                          "pa": float(data["pmualpha"]), "sa": float(data["psalpha"]),
                          "pb": float(data["pmubeta"]), "sb": float(data["psbeta"])}


def _centred(sigma, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", y.shape[0]):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def _noncentred(sigma, y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", y.shape[0]):
        eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
        numpyro.deterministic("theta", mu + tau * eta)
        numpyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)


def eight_schools_centred(data: dict):
    return _centred, {"sigma": _a(data["sigma"]), "y": _a(data["y"])}


def eight_schools_noncentred(data: dict):
    return _noncentred, {"sigma": _a(data["sigma"]), "y": _a(data["y"])}


#: by posteriordb name (and the two eight schools), the model builder
MODELS: dict[str, Callable[[dict], tuple[Callable, dict]]] = {
    "kidiq_with_mom_work-kidscore_mom_work": kidscore_mom_work,
    "kidiq_with_mom_work-kidscore_interaction_c": kidscore_interaction_c,
    "kidiq_with_mom_work-kidscore_interaction_c2": kidscore_interaction_c2,
    "kidiq_with_mom_work-kidscore_interaction_z": kidscore_interaction_z,
    "earnings-earn_height": earn_height,
    "earnings-log10earn_height": log10earn_height,
    "earnings-logearn_height": logearn_height,
    "earnings-logearn_height_male": logearn_height_male,
    "earnings-logearn_interaction": logearn_interaction,
    "earnings-logearn_interaction_z": logearn_interaction_z,
    "earnings-logearn_logheight_male": logearn_logheight_male,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    **{f"nes{year}-nes": nes for year in range(1972, 2001, 4)},
    "eight_schools_centred": eight_schools_centred,
    "eight_schools_noncentred": eight_schools_noncentred,
}


def load(name: str) -> tuple[Callable, dict]:
    """``(model, kwargs)`` of ``name`` on its data."""
    if name not in MODELS:
        raise ValueError(f"no NumPyro model {name!r}; the models are {sorted(MODELS)}")
    if name.startswith("eight_schools"):
        return MODELS[name](EIGHT_SCHOOLS)
    info = json.loads((ROOT / "posteriors" / f"{name}.json").read_text())
    return MODELS[name](read_zipped_json(ROOT / "data" / f"{info['data_name']}.json.zip"))
