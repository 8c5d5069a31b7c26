"""The result of a run: draws laid out ``(chain, draw, *event)`` with their statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import diagnostics, persist


@dataclass
class Summary:
    """Posterior summary per coordinate: each field has the event shape.

    Chains that turned non-finite are left out; ``chains_used`` says how many remain.
    """

    mean: np.ndarray
    sd: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    r_hat: np.ndarray
    chains_used: int
    names: list[str] = field(default_factory=list)

    def rows(self) -> list[tuple[str, float, float, float, float, float]]:
        cols = [self.mean, self.sd, self.ess_bulk, self.ess_tail, self.r_hat]
        flat = [np.asarray(c).reshape(-1) for c in cols]
        return [(name, *(float(c[i]) for c in flat)) for i, name in enumerate(self.names)]

    def __str__(self) -> str:
        head = f"{'':>10} {'mean':>10} {'sd':>10} {'ess_bulk':>9} {'ess_tail':>9} {'r_hat':>7}"
        lines = [head]
        rows = self.rows()
        shown = rows if len(rows) <= 25 else rows[:20] + [None] + rows[-3:]
        for r in shown:
            if r is None:
                lines.append(f"{'...':>10}")
                continue
            lines.append(f"{r[0]:>10} {r[1]:>10.4g} {r[2]:>10.4g} {r[3]:>9.0f} {r[4]:>9.0f} "
                         f"{r[5]:>7.3f}")
        lines.append(f"({self.chains_used} chains)")
        return "\n".join(lines)

    __repr__ = __str__

    def to_dataframe(self) -> Any:
        """The table as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=["name", "mean", "sd", "ess_bulk", "ess_tail",
                                                  "r_hat"]).set_index("name")


_KIND = "Chains file"


def _names(event_shape: tuple[int, ...]) -> list[str]:
    if not event_shape:
        return ["x"]
    return [f"x[{','.join(map(str, idx))}]" for idx in np.ndindex(*event_shape)]


def energy_of_draws(energy: Callable[[Tensor], Tensor], samples: Tensor) -> Tensor:
    """``energy`` of every draw of ``(chain, draw, *event)``, batched, as ``(chain, draw)``."""
    c, d = samples.shape[:2]
    flat = samples.reshape(c * d, *samples.shape[2:])
    chunk = max(c, (1 << 22) // max(1, flat[0].numel()))
    with torch.no_grad():
        return torch.cat([energy(flat[i:i + chunk]) for i in range(0, c * d, chunk)]
                         ).reshape(c, d)


@dataclass
class Chains:
    """Draws and statistics of a run.

    Attributes:
        samples: kept draws, ``(chain, draw, *event)`` (after burn-in, every ``thin`` steps);
            a chain-first view of the draw-major buffer the run wrote (no copy), so use
            ``reshape`` rather than ``view`` on it.
        energy: energy at each kept draw, ``(chain, draw)``: recorded during the run by
            kernels that carry it (MALA, HMC), computed on first access otherwise (ULA).
        final: last state's position, ``(chain, *event)``.
        acceptance_rate: ``(chain,)`` share of accepted proposals after burn-in, or
            ``None`` for kernels without an accept step (ULA).
        divergences: ``(chain,)`` divergent proposals after burn-in (0 for ULA).
        nonfinite_step: ``(chain,)`` step at which the chain was first seen NaN/Inf,
            ``-1`` where it stayed finite. Its draws from then on are kept as they are.
        trajectory: every state, ``(chain, burn_in + n_steps, *event)``, if asked for.
        final_state: the kernel state, to continue a run.
        n_grads: ``(chain,)`` gradient evaluations after burn-in, for kernels that report
            them (NUTS, MCLMC, MAMS, ...); ``None`` otherwise.
        stats: the kernel's own per-draw statistics, each ``(chain, draw)``: NUTS's
            ``tree_depth`` and ``n_grads`` (of the step that made the draw), ...
    """

    samples: Tensor
    final: Tensor
    acceptance_rate: Tensor | None
    divergences: Tensor
    nonfinite_step: Tensor
    trajectory: Tensor | None = None
    final_state: Any = None
    seed: int | None = None
    n_steps: int = 0
    burn_in: int = 0
    thin: int = 1
    kernel: str = ""
    _energy: Tensor | None = field(default=None, repr=False)
    _energy_fn: Any = field(default=None, repr=False)
    _accepted_at_draw: Tensor | None = field(default=None, repr=False)
    _divergent_at_draw: Tensor | None = field(default=None, repr=False)
    n_grads: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def concat(cls, parts: list[Chains]) -> Chains:
        """Chains of several blocks side by side (in order); ``final_state`` is dropped."""
        if len(parts) == 1:
            return parts[0]

        def cat(name: str) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            if any(v is None for v in values):
                return None
            return torch.cat([v.to(values[0].device) for v in values])

        first = parts[0]
        return dataclasses.replace(
            first, samples=cat("samples"), final=cat("final"),
            acceptance_rate=cat("acceptance_rate"), divergences=cat("divergences"),
            nonfinite_step=cat("nonfinite_step"), trajectory=cat("trajectory"),
            final_state=None, _energy=cat("_energy"),
            _accepted_at_draw=cat("_accepted_at_draw"),
            _divergent_at_draw=cat("_divergent_at_draw"), n_grads=cat("n_grads"),
            stats={k: torch.cat([p.stats[k].to(first.stats[k].device) for p in parts])
                   for k in first.stats})

    def _per_draw(self, cumulative: Tensor | None) -> Tensor | None:
        """Counts in each draw's thinning window from counters snapshotted at the draws."""
        if cumulative is None:
            return None
        return torch.diff(cumulative, dim=1, prepend=torch.zeros_like(cumulative[:, :1]))

    def to_arviz(self, var_name: str = "x", dims: list[str] | None = None,
                 posterior: dict[str, Any] | None = None) -> Any:
        """An ``arviz.InferenceData``: posterior ``var_name (chain, draw, *event)``;
        sample_stats ``energy``, ``lp = -energy``, and for kernels with an accept step
        ``acceptance_rate`` (share accepted in each draw's ``thin``-step window) and
        ``diverging`` (a divergence in that window). Needs arviz.

        ``posterior``: named arrays ``(chain, draw, *shape)`` to store instead of the
        samples (a model's constrained parameters); ``var_name`` and ``dims`` then unused.
        """
        import arviz as az

        energy = self.energy.detach().cpu().double().numpy()
        stats = {"energy": energy, "lp": -energy}
        if self.acceptance_rate is not None:
            accepted = self._per_draw(self._accepted_at_draw)
            stats["acceptance_rate"] = (accepted.double() / self.thin).cpu().numpy()
        divergent = self._per_draw(self._divergent_at_draw)
        if divergent is not None and self.acceptance_rate is not None:
            stats["diverging"] = (divergent > 0).cpu().numpy()
        for name, v in self.stats.items():  # ArviZ calls the gradients of a draw n_steps
            stats["n_steps" if name == "n_grads" else name] = v.cpu().numpy()
        named = posterior is not None
        if not named:
            posterior = {var_name: self.samples.detach().cpu().numpy()}
        return az.from_dict(posterior=posterior, sample_stats=stats,
                            dims=None if dims is None or named else {var_name: dims},
                            attrs={"sampler": self.kernel, "seed": self.seed,
                                   "burn_in": self.burn_in, "thin": self.thin,
                                   "library": "torchlangevin"})

    @property
    def energy(self) -> Tensor:
        """Energy at each kept draw, ``(chain, draw)``."""
        if self._energy is None:
            if self._energy_fn is None:
                raise ValueError("this Chains has no energy trace and no energy to compute it")
            self._energy = energy_of_draws(self._energy_fn, self.samples)
        return self._energy

    @property
    def n_chains(self) -> int:
        return self.samples.shape[0]

    @property
    def n_draws(self) -> int:
        return self.samples.shape[1]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.samples.shape[2:])

    @property
    def nonfinite_chains(self) -> list[int]:
        """Indices of chains that turned NaN/Inf."""
        return (self.nonfinite_step >= 0).nonzero().flatten().tolist()

    def summary(self) -> Summary:
        """Mean, sd, bulk and tail ESS and rank-normalised split R-hat per coordinate."""
        ok = self.nonfinite_step < 0
        if not bool(ok.any()):
            raise ValueError("every chain turned non-finite; nothing to summarise "
                             f"(first bad steps: {self.nonfinite_step.tolist()[:10]})")
        draws = self.samples[ok.to(self.samples.device)].to(torch.float64)
        flat = draws.reshape(-1, *self.event_shape)
        return Summary(
            mean=flat.mean(0).cpu().numpy(), sd=flat.std(0).cpu().numpy(),
            ess_bulk=diagnostics.ess_bulk(draws).cpu().numpy(),
            ess_tail=diagnostics.ess_tail(draws).cpu().numpy(),
            r_hat=diagnostics.rhat(draws).cpu().numpy(),
            chains_used=int(ok.sum()), names=_names(self.event_shape))

    def save(self, path: str | Path) -> None:
        """Write to ``path``: the draws and statistics as CPU tensors, numbers and strings
        with their checksums, crash-safely (:func:`torchlangevin.persist.save`); the kernel
        state and the energy function are not saved."""
        self.energy  # noqa: B018 - make sure the trace is there to save
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("final_state", "_energy_fn", "stats")}
        data = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in data.items()}
        data["stats"] = {k: v.cpu() for k, v in self.stats.items()}
        persist.save(path, _KIND, data)

    @classmethod
    def load(cls, path: str | Path) -> Chains:
        """Read what :meth:`save` wrote (``torch.load(weights_only=True)``, every checksum
        verified; a file that fails is a :class:`~torchlangevin.persist.PersistError`)."""
        data = persist.load(path, _KIND)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise persist.PersistError(f"{_KIND} {str(path)!r}: has fields {unknown} that "
                                       f"Chains does not know: written by another version")
        return cls(**data)

    def __repr__(self) -> str:
        acc = ("" if self.acceptance_rate is None
               else f", acceptance={float(self.acceptance_rate.mean()):.3f}")
        bad = f", nonfinite_chains={self.nonfinite_chains}" if self.nonfinite_chains else ""
        return (f"Chains(kernel={self.kernel!r}, chains={self.n_chains}, draws={self.n_draws}, "
                f"event_shape={self.event_shape}{acc}, "
                f"divergences={int(self.divergences.sum())}{bad})")
