"""Mass matrices: scalar, diagonal, dense and diagonal-plus-low-rank ``M^{-1}``.

Every kernel preconditions with the inverse mass ``A = M^{-1}`` through five operations,
over the flattened event (``p, z, r`` are ``(C, *event)``, one row per chain):

    velocity(p)  = A p                 the leapfrog drift, the Langevin drift of a gradient
    momentum(z)  = F^{-T} z ~ N(0, M)  a fresh momentum from standard normals
    spread(z)    = F z ~ N(0, A)       the Langevin proposal's noise
    kinetic(p)   = p^T A p / 2
    quad_mass(r) = r^T M r = |F^{-1} r|^2   the Langevin reverse move's density

with ``A = F F^T``. A float or a tensor (event-shaped, or ``(C, *event)`` for one per
chain) is a scalar or diagonal ``A``: elementwise, as fast as no mass at all.

* :class:`DenseMass`: ``F = L``, the Cholesky factor of ``A`` (n x n, shared by chains).
* :class:`LowRankMass`: nutpie's ``A = S (I + U (diag(lam) - I) U^T) S``, ``S = diag(sigma)``
  and ``U`` (n x k) orthonormal, so ``F = S (I + U (diag(sqrt lam) - I) U^T)`` and every
  operation costs ``O(n k)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["DenseMass", "LowRankMass", "Mass", "velocity", "momentum", "spread", "kinetic",
           "quad_mass", "is_unit", "mass_to", "check_mass", "mass_dim"]


class DenseMass(NamedTuple):
    """A dense inverse mass ``A = L L^T`` over the flattened event; build it with
    :meth:`of`, which factors it (``chol = L``, ``chol_inv = L^{-1}``)."""

    inv_mass: Tensor
    chol: Tensor
    chol_inv: Tensor

    @classmethod
    def of(cls, inv_mass: Tensor) -> DenseMass:
        """Factor ``inv_mass`` (n x n, symmetric positive definite)."""
        a = torch.as_tensor(inv_mass)
        if not a.is_floating_point():
            a = a.to(torch.get_default_dtype())
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"inv_mass for DenseMass must be a square matrix (n, n); got "
                             f"shape {tuple(a.shape)}")
        if not bool(torch.isfinite(a).all()) or not torch.allclose(a, a.mT, rtol=1e-5,
                                                                     atol=1e-8):
            raise ValueError("inv_mass for DenseMass must be finite and symmetric")
        a = 0.5 * (a + a.mT)
        chol, bad = torch.linalg.cholesky_ex(a)
        if int(bad):
            raise ValueError("inv_mass for DenseMass must be positive definite; its Cholesky "
                             f"factorisation failed at column {int(bad) - 1}")
        eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
        return cls(a, chol, torch.linalg.solve_triangular(chol, eye, upper=False))


class LowRankMass(NamedTuple):
    """``A = S (I + U (diag(lam) - I) U^T) S``: ``sigma`` (n,) > 0, ``vectors`` U (n, k)
    with orthonormal columns, ``values`` lam (k,) > 0 (as nutpie's low-rank mass)."""

    sigma: Tensor
    vectors: Tensor
    values: Tensor

    @classmethod
    def of(cls, sigma: Tensor, vectors: Tensor, values: Tensor) -> LowRankMass:
        """Check the pieces: shapes, positivity, orthonormal columns."""
        sigma, u, lam = (torch.as_tensor(t) for t in (sigma, vectors, values))
        n = sigma.shape[0] if sigma.ndim == 1 else -1
        if sigma.ndim != 1 or u.ndim != 2 or u.shape[0] != n or lam.shape != (u.shape[1],):
            raise ValueError(f"LowRankMass needs sigma (n,), vectors (n, k), values (k,); got "
                             f"{tuple(sigma.shape)}, {tuple(u.shape)}, {tuple(lam.shape)}")
        if not bool((sigma > 0).all() & torch.isfinite(sigma).all()) or \
                not bool((lam > 0).all() & torch.isfinite(lam).all()):
            raise ValueError("LowRankMass needs positive, finite sigma and values")
        gram = u.mT @ u
        if not torch.allclose(gram, torch.eye(u.shape[1], dtype=u.dtype), atol=1e-4):
            raise ValueError("LowRankMass vectors must have orthonormal columns")
        return cls(sigma, u, lam)

    def matrix(self) -> Tensor:
        """The dense ``A`` (n x n), for checks and small problems."""
        s, u, lam = self
        inner = torch.eye(s.shape[0], dtype=s.dtype, device=s.device) + (u * (lam - 1)) @ u.mT
        return s[:, None] * inner * s[None, :]


Mass = float | Tensor | DenseMass | LowRankMass


def is_unit(m: Mass) -> bool:
    """Whether ``m`` is the float 1 (no preconditioning: the fast paths)."""
    return not isinstance(m, (Tensor, tuple)) and m == 1.0


def mass_dim(m: DenseMass | LowRankMass) -> int:
    """The flattened event size a dense or low-rank mass acts on."""
    return m.inv_mass.shape[0] if isinstance(m, DenseMass) else m.sigma.shape[0]


def _rows(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1)


def _low_rank(v: Tensor, m: LowRankMass, power: float) -> Tensor:
    """``(I + U (diag(lam^power) - I) U^T) v`` on rows ``v (C, n)``."""
    coef = m.values if power == 1.0 else m.values ** power
    return v + ((v @ m.vectors) * (coef - 1)) @ m.vectors.mT


def velocity(p: Tensor, m: Mass) -> Tensor:
    """``A p``, per chain."""
    if isinstance(m, DenseMass):
        return (_rows(p) @ m.inv_mass).view(p.shape)
    if isinstance(m, LowRankMass):
        q = _rows(p) * m.sigma
        return (_low_rank(q, m, 1.0) * m.sigma).view(p.shape)
    return p if is_unit(m) else p * m


def momentum(z: Tensor, m: Mass) -> Tensor:
    """``F^{-T} z``: standard normals ``z`` made ``N(0, M)`` (``z`` itself for a unit mass:
    callers must not update it in place)."""
    if isinstance(m, DenseMass):
        return (_rows(z) @ m.chol_inv).view(z.shape)
    if isinstance(m, LowRankMass):
        return (_low_rank(_rows(z), m, -0.5) / m.sigma).view(z.shape)
    if is_unit(m):
        return z
    return z * (torch.rsqrt(m) if isinstance(m, Tensor) else m ** -0.5)


def spread(z: Tensor, m: Mass) -> Tensor:
    """``F z``: standard normals ``z`` made ``N(0, A)``."""
    if isinstance(m, DenseMass):
        return (_rows(z) @ m.chol.mT).view(z.shape)
    if isinstance(m, LowRankMass):
        return (_low_rank(_rows(z), m, 0.5) * m.sigma).view(z.shape)
    if is_unit(m):
        return z
    return z * (torch.sqrt(m) if isinstance(m, Tensor) else math.sqrt(m))


def _event_sum(v: Tensor) -> Tensor:
    return v.sum(dim=tuple(range(1, v.ndim))) if v.ndim > 1 else v


def kinetic(p: Tensor, m: Mass) -> Tensor:
    """``K(p) = p^T A p / 2``, per chain."""
    if is_unit(m):
        return 0.5 * _event_sum(p * p)
    return 0.5 * _event_sum(p * velocity(p, m))


def quad_mass(r: Tensor, m: Mass) -> Tensor:
    """``r^T M r = r^T A^{-1} r``, per chain."""
    if isinstance(m, DenseMass):
        w = _rows(r) @ m.chol_inv.mT
        return (w * w).sum(1)
    if isinstance(m, LowRankMass):
        w = _low_rank(_rows(r) / m.sigma, m, -0.5)
        return (w * w).sum(1)
    return _event_sum(r * r) if is_unit(m) else _event_sum(r * r / m)


def mass_to(m: Mass, x: Tensor) -> Mass:
    """``m`` on ``x``'s device and dtype (floats as they are)."""
    if isinstance(m, tuple):
        return type(m)(*(t.to(device=x.device, dtype=x.dtype) for t in m))
    return m.to(device=x.device, dtype=x.dtype) if isinstance(m, Tensor) else m


def check_mass(name: str, value: object) -> Mass:
    """``M^{-1}``: a positive float, a positive tensor (event or state shaped), or a
    :class:`DenseMass` / :class:`LowRankMass` (checked when built by their ``of``)."""
    if isinstance(value, (DenseMass, LowRankMass)):
        return type(value)(*(t.detach() for t in value))
    if isinstance(value, Tensor):
        value = value.detach()
        ok = bool((torch.isfinite(value) & (value > 0)).all())
    else:
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a positive float, a tensor, a DenseMass or a "
                             f"LowRankMass; got {type(value).__name__}") from None
        ok = math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{name} must be positive and finite; got {value!r}")
    return value
