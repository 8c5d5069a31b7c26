"""posteriordb posteriors ported to :class:`torchlangevin.model.Model`: Stan's parameters,
constraints (``real<lower=0>`` is ``positive``: Stan's ``exp`` transform and its Jacobian;
``simplex``, ``ordered``, ``positive_ordered``, ``real<lower=0, upper=1>`` likewise) and
priors (a parameter without a prior has Stan's improper flat one), in float64.

Each port is ``PORTS[posterior](data) -> Model``; parameter ``beta`` of shape ``(K,)`` is
Stan's ``beta[1]``..``beta[K]``. The ports lie by family in ``ports_regression``
(earnings, kidiq, kilpisjarvi, nes), ``ports_timeseries`` (arma, mixture, HMMs) and
``ports_ode`` (Lotka-Volterra, one-compartment PK); this module is their one registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch

from benchmarks.posteriordb import ports_ode, ports_regression, ports_timeseries
from benchmarks.posteriordb.common import ROOT, read_zipped_json, t64
from torchlangevin.model import Model

__all__ = ["ROOT", "PORTS", "load", "load_data", "read_zipped_json", "reference_point"]

PORTS: dict[str, Callable[[dict], Model]] = dict(sorted({
    **ports_regression.PORTS, **ports_timeseries.PORTS, **ports_ode.PORTS}.items()))


def load_data(posterior: str) -> dict:
    """The Stan data of ``posterior``."""
    if posterior not in PORTS:
        raise ValueError(f"posterior must be one of {list(PORTS)}; got {posterior!r}")
    info = json.loads((ROOT / "posteriors" / f"{posterior}.json").read_text())
    return read_zipped_json(ROOT / "data" / f"{info['data_name']}.json.zip")


def load(posterior: str) -> tuple[Model, dict[str, torch.Tensor]]:
    """The port of ``posterior`` on its data, and Stan's reference draws by Stan name,
    each ``(10 chains, 1000 draws)``."""
    data = load_data(posterior)
    chains = read_zipped_json(ROOT / "reference_draws" / f"{posterior}.json.zip")
    reference = {k: t64([c[k] for c in chains]) for k in chains[0]}
    return PORTS[posterior](data), reference


def reference_point(model: Model, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stan's reference draws as the model's parameters by name, each
    ``(10 * 1000, *shape)`` (Stan's ``beta[k]`` is ``beta[..., k - 1]``; vectors only)."""
    out = {}
    for b in model.blocks:
        if not b.shape:
            out[b.name] = reference[b.name].reshape(-1)
        else:
            cols = [reference[f"{b.name}[{i + 1}]"].reshape(-1) for i in range(b.shape[0])]
            out[b.name] = torch.stack(cols, -1)
    return out
