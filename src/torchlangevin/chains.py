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


#: float64 working memory a summary needs per draw number of a chunk (rank normalisation:
#: the split copy, a sort's values and indices, tie bounds, ranks, normal scores; ESS: the
#: FFT of twice the length), measured; it sets the chunk size of :meth:`Chains.summary`
SUMMARY_BYTES_PER_NUMBER = 128
_MIN_CHUNK = 1 << 16  # numbers: smaller runs are summarised in one piece


def _summarise(part: Tensor) -> tuple[np.ndarray, ...]:
    """Mean, sd, bulk ESS, tail ESS and R-hat of ``(chain, draw, k)`` draws, as flat arrays."""
    x = part.to(torch.float64)
    k = x.shape[2]
    flat = x.reshape(-1, k)
    out = (flat.mean(0), flat.std(0), diagnostics.ess_bulk(x), diagnostics.ess_tail(x),
           diagnostics.rhat(x))
    return tuple(v.reshape(k).cpu().numpy() for v in out)


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
        """Mean, sd, bulk and tail ESS and rank-normalised split R-hat per coordinate.

        Computed in float64 over chunks of coordinates, each of at most
        ``max(2^16, draws' bytes / SUMMARY_BYTES_PER_NUMBER)`` numbers (never under one
        coordinate), so it needs about the draws' memory again beyond the draws, not a
        float64 copy of them all."""
        ok = self.nonfinite_step < 0
        if not bool(ok.any()):
            raise ValueError("every chain turned non-finite; nothing to summarise "
                             f"(first bad steps: {self.nonfinite_step.tolist()[:10]})")
        c, d = self.samples.shape[:2]
        flat = self.samples.reshape(c, d, -1)  # a view: the event is innermost
        rows = None if bool(ok.all()) else ok.nonzero().flatten().to(flat.device)
        used = c if rows is None else rows.numel()
        k = flat.shape[2]
        per_chunk = max(_MIN_CHUNK, flat.numel() * flat.element_size()
                        // SUMMARY_BYTES_PER_NUMBER)
        width = min(k, max(1, per_chunk // max(1, used * d)))
        stats = [_summarise(flat[:, :, j:j + width] if rows is None
                            else flat[rows, :, j:j + width]) for j in range(0, k, width)]
        event = self.event_shape
        mean, sd, bulk, tail, r_hat = (np.concatenate(col).reshape(event) for col in zip(*stats,
                                                                                    strict=True))
        return Summary(mean=mean, sd=sd, ess_bulk=bulk, ess_tail=tail, r_hat=r_hat,
                       chains_used=int(used), names=_names(event))

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
