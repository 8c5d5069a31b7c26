"""Pyro models on many chains at once: :func:`from_pyro` makes a Pyro model a
:class:`~torchlangevin.model.Model`.

The model is traced once to find its latent sample sites, their supports and shapes;
each becomes a :class:`~torchlangevin.model.Param` (its support's bijection from
``biject_to``, Pyro's transforms included). The log joint of ``C`` chains is one run of
the model inside a plate over chains, to the left of every batch dimension it uses (as
Pyro's ``vectorize_particles`` does for ELBO particles), conditioned on the latent values:

    log p(theta_c, y) = sum_sites sum_{dims but the chain's} log p_site(value | parents),

with each site's ``poutine.scale`` and mask applied. A model that does not vectorise that
way (its log joint disagrees with one chain's, or fails) is run under ``torch.func.vmap``,
and failing that, with a warning, once per chain. ``pyro.deterministic`` sites are
reported with the draws (derived quantities).

::

    model = tl.from_pyro(eight_schools, J, sigma, y=y)
    result = tl.sample_posterior(model, n_chains=4, seed=0)
    result["tau"]                     # (chain, draw)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .model import Model, Param, Values

__all__ = ["from_pyro", "VectorizationWarning"]

#: the plate over chains
CHAINS = "_torchlangevin_chains"


class VectorizationWarning(UserWarning):
    """The model could not be run for all chains at once: one run per chain (slow)."""


def _pyro() -> Any:
    try:
        import pyro
    except ImportError:
        raise ImportError("from_pyro needs pyro-ppl: pip install 'torchlangevin[pyro]'") from None
    return pyro


class _Site:
    """A latent site: its name, value shape (batch + event), and the batch dims it has."""

    def __init__(self, name: str, shape: tuple[int, ...], batch_dims: int,
                 support: Any) -> None:
        self.name, self.shape, self.batch_dims, self.support = name, shape, batch_dims, support


def _is_sample(site: dict) -> bool:
    """A sample site, not a plate's subsample site."""
    from pyro.poutine.util import site_is_subsample

    return site["type"] == "sample" and not site_is_subsample(site)


def _latent_sites(trace: Any) -> tuple[list[_Site], list[str], int]:
    """The latent sites, the deterministic sites' names, and the most batch dims of any."""
    latent, deterministic, nesting = [], [], 0
    for name, site in trace.nodes.items():
        if not _is_sample(site):
            continue
        fn = site["fn"]
        nesting = max(nesting, len(getattr(fn, "batch_shape", ())))
        if site["infer"].get("_deterministic"):
            deterministic.append(name)
        elif not site["is_observed"]:
            if fn.support.is_discrete:
                raise ValueError(f"from_pyro: site {name!r} is discrete ({type(fn).__name__}); "
                                 f"gradient samplers need continuous latents (marginalise "
                                 f"it out, or enumerate it in the model)")
            latent.append(_Site(name, tuple(site["value"].shape), len(fn.batch_shape),
                                fn.support))
    if not latent:
        raise ValueError("from_pyro: the model has no latent (unobserved) sample sites")
    return latent, deterministic, nesting


class _PyroJoint:
    """The log joint of a Pyro model over named values ``(C, *shape)``: vectorised with a
    plate over chains, ``torch.func.vmap``, or a loop (``self.mode``)."""

    def __init__(self, model: Callable[..., Any], args: tuple, kwargs: dict,
                 sites: list[_Site], deterministic: list[str], nesting: int,
                 vectorize: str | None) -> None:
        self.pyro = _pyro()
        self.model, self.args, self.kwargs = model, args, kwargs
        self.sites, self.deterministic, self.nesting = sites, deterministic, nesting
        self.mode = vectorize

    def _trace(self, values: dict[str, Tensor], n: int | None) -> Any:
        pyro = self.pyro
        conditioned = pyro.poutine.condition(self.model, data=values)

        def run(*args: Any, **kwargs: Any) -> Any:
            if n is None:
                return conditioned(*args, **kwargs)
            with pyro.plate(CHAINS, n, dim=-(self.nesting + 1)):
                return conditioned(*args, **kwargs)

        with pyro.validation_enabled(False):
            trace = pyro.poutine.trace(run).get_trace(*self.args, **self.kwargs)
            trace.compute_log_prob()
        return trace

    def _per_chain(self, trace: Any, n: int) -> Tensor:
        total = None
        for site in trace.nodes.values():
            if not _is_sample(site) or "log_prob" not in site:
                continue
            lp = site["log_prob"]
            if lp.ndim > self.nesting + 1:
                raise ValueError("a site's log density has more dims than the plates")
            lp = lp.reshape(*(1,) * (self.nesting + 1 - lp.ndim), *lp.shape)
            lp = lp.expand(n, *lp.shape[1:]).reshape(n, -1).sum(-1)
            total = lp if total is None else total + lp
        return total

    def _plated_values(self, values: Values, n: int) -> dict[str, Tensor]:
        out = {}
        for s in self.sites:
            v = values[s.name].reshape(n, *s.shape)
            out[s.name] = v.reshape(n, *(1,) * (self.nesting - s.batch_dims), *s.shape)
        return out

    def plate(self, values: Values) -> Tensor:
        """All chains in one run of the model inside the chains' plate."""
        n = values[self.sites[0].name].shape[0]
        return self._per_chain(self._trace(self._plated_values(values, n), n), n)

    def single(self, values: dict[str, Tensor]) -> Tensor:
        """One chain: ``values`` of the sites' own shapes; the summed log density."""
        return self._per_chain(self._trace(values, None), 1)[0]

    def vmap(self, values: Values) -> Tensor:
        return torch.func.vmap(self.single)({s.name: values[s.name] for s in self.sites})

    def loop(self, values: Values) -> Tensor:
        n = values[self.sites[0].name].shape[0]
        return torch.stack([self.single({s.name: values[s.name][i] for s in self.sites})
                            for i in range(n)])

    def __call__(self, values: Values) -> Tensor:
        return getattr(self, self.mode or "loop")(values)

    def choose(self, probe: Values) -> None:
        """The first way (plate, vmap, loop) whose log joint of two chains equals the
        loop's; warns when it is the loop."""
        reference = self.loop(probe)
        for mode in ("plate", "vmap"):
            if self.mode not in (None, mode):
                continue
            try:
                got = getattr(self, mode)(probe)
            except Exception:  # noqa: BLE001 - any failure means: not this way
                continue
            if got.shape == reference.shape and torch.allclose(got, reference, rtol=1e-6,
                                                               atol=1e-6):
                self.mode = mode
                return
        if self.mode not in (None, "loop"):
            raise ValueError(f"from_pyro: vectorize={self.mode!r} does not reproduce the "
                             f"model's log density chain by chain")
        warnings.warn("from_pyro: the model does not run for all chains at once in a plate "
                      "or under torch.func.vmap; running it once per chain (slow)",
                      VectorizationWarning, stacklevel=3)
        self.mode = "loop"

    def derived(self, values: Values) -> dict[str, Tensor]:
        """The deterministic sites at ``values`` (``(*batch, *shape)``), by name."""
        some = values[self.sites[0].name]
        batch = some.shape[:some.ndim - len(self.sites[0].shape)]
        n = math.prod(batch)
        flat = Values({s.name: values[s.name].reshape(n, *s.shape) for s in self.sites})
        if self.mode == "plate":
            trace = self._trace(self._plated_values(flat, n), n)
            return {k: trace.nodes[k]["value"].reshape(*batch, *self._det_shape(k))
                    for k in self.deterministic}
        traces = [self._trace({s.name: flat[s.name][i] for s in self.sites}, None)
                  for i in range(n)]
        return {k: torch.stack([t.nodes[k]["value"] for t in traces]).reshape(
            *batch, *self._det_shape(k)) for k in self.deterministic}

    def _det_shape(self, name: str) -> tuple[int, ...]:
        return self.det_shapes[name]


def from_pyro(model: Callable[..., Any], *args: Any, vectorize: str | None = None,
              dtype: torch.dtype = torch.float64, device: torch.device | str | None = None,
              **kwargs: Any) -> Model:
    """A :class:`~torchlangevin.model.Model` of the Pyro model ``model(*args, **kwargs)``'s
    posterior over its latent sites.

    Args:
        model: a Pyro model (observed sites through ``obs=`` or ``poutine.condition``).
        args, kwargs: passed to the model on every run.
        vectorize: ``"plate"`` (all chains in one run inside a plate over chains),
            ``"vmap"`` (``torch.func.vmap`` of one chain's run) or ``"loop"``; default:
            the first of these whose log density matches one chain's run.
        dtype, device: of the unconstrained vector (float64 by default, as Stan).

    The model's parameters are its latent sites by name, each with the shape of its value
    and its distribution's support; ``pyro.deterministic`` sites are its derived
    quantities. Sample it with :func:`~torchlangevin.model.sample_posterior`.
    """
    pyro = _pyro()
    if vectorize not in (None, "plate", "vmap", "loop"):
        raise ValueError(f"vectorize must be None, 'plate', 'vmap' or 'loop'; got {vectorize!r}")
    if not callable(model):
        raise TypeError(f"model must be a Pyro model (a callable); got {model!r}")
    with pyro.validation_enabled(False), torch.no_grad():
        trace = pyro.poutine.trace(model).get_trace(*args, **kwargs)
    sites, deterministic, nesting = _latent_sites(trace)
    joint = _PyroJoint(model, args, kwargs, sites, deterministic, nesting, vectorize)
    joint.det_shapes = {k: tuple(trace.nodes[k]["value"].shape) for k in deterministic}
    params = {s.name: Param(s.shape, s.support) for s in sites}
    derived = {k: _derived_one(joint, k) for k in deterministic}
    result = Model(joint, params, derived=derived, dtype=dtype, device=device)
    with torch.no_grad():
        joint.choose(result.constrain(result.init(2, seed=0, radius=1.0)))
    result.pyro_mode = joint.mode
    return result


def _derived_one(joint: _PyroJoint, name: str) -> Callable[[Values], Tensor]:
    cache: dict[int, dict[str, Tensor]] = {}

    def fn(values: Values) -> Tensor:
        key = id(values)
        if key not in cache:
            cache.clear()
            cache[key] = joint.derived(values)
        return cache[key][name]

    return fn
