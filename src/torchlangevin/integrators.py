"""The shared maths of the kernels: the Langevin move and the leapfrog integrator.

Parameters (step size, noise scale, inverse mass) are Python floats or tensors that
broadcast against the state; a per-chain tensor of shape ``(C,)`` is reshaped to
``(C, 1, ..., 1)`` by :func:`per_chain`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .energy import energy_and_grad
from .mass import DenseMass, LowRankMass, Mass, quad_mass, spread, velocity
from .mass import kinetic as _mass_kinetic

Scalar = float | Tensor

__all__ = ["per_chain", "langevin_move", "langevin_log_ratio", "leapfrog", "event_sum", "root",
           "inv_root"]


def per_chain(value: Scalar, x: Tensor) -> Scalar:
    """Make a ``(C,)`` tensor broadcast over the event dims of ``x``; floats pass through."""
    if isinstance(value, Tensor) and value.ndim == 1 and x.ndim > 1:
        return value.view(-1, *([1] * (x.ndim - 1)))
    return value


def event_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the leading (chain) one: ``(C, *event) -> (C,)``."""
    return x.sum(dim=tuple(range(1, x.ndim))) if x.ndim > 1 else x


def root(v: Scalar) -> Scalar:
    """``v ** 0.5`` for a float or a tensor. Tensors go through ``torch.sqrt``: compiled,
    ``v ** 0.5`` and ``v ** -0.5`` become a per-element ``powf`` call inside the fused loop,
    which is slower than the whole rest of a leapfrog step."""
    return torch.sqrt(v) if isinstance(v, Tensor) else v**0.5


def inv_root(v: Scalar) -> Scalar:
    """``v ** -0.5`` for a float or a tensor (``torch.rsqrt``; see :func:`root`)."""
    return torch.rsqrt(v) if isinstance(v, Tensor) else v**-0.5


def _is_one(v: Scalar) -> bool:
    return not isinstance(v, Tensor) and v == 1.0


def _is_matrix(m: Mass) -> bool:
    return isinstance(m, (DenseMass, LowRankMass))


def langevin_move(x: Tensor, grad: Tensor, noise: Tensor, step_size: Scalar,
                  noise_scale: Scalar, inv_mass: Mass = 1.0, out: Tensor | None = None
                  ) -> Tensor:
    """``x' = x - eps A grad + noise_scale * sqrt(2 eps) F noise``, ``A = M^{-1} = F F^T``,
    into ``out`` if given (``out`` may be ``x`` itself); see :mod:`torchlangevin.mass`."""
    if not isinstance(step_size, Tensor) and not isinstance(noise_scale, Tensor) \
            and _is_one(inv_mass):
        scale = noise_scale * math.sqrt(2.0 * step_size)
        return torch.add(x, grad, alpha=-step_size, out=out).add_(noise, alpha=scale)
    eps, scale = per_chain(step_size, x), per_chain(noise_scale, x)
    if _is_matrix(inv_mass):
        moved = x - eps * velocity(grad, inv_mass) + (scale * root(2 * eps)) * \
            spread(noise, inv_mass)
    else:
        moved = x - (eps * inv_mass) * grad + (scale * root(2 * eps) * root(inv_mass)) * noise
    return moved if out is None else out.copy_(moved)


def langevin_log_ratio(x: Tensor, y: Tensor, grad_y: Tensor, noise: Tensor,
                       step_size: Scalar, temperature: Scalar, inv_mass: Scalar = 1.0) -> Tensor:
    """``log q(x | y) - log q(y | x)`` for the Langevin proposal, per chain.

    ``q(y | x) = N(y; x - eps M^{-1} grad(x), 2 eps T M^{-1})`` (any mass of
    :mod:`torchlangevin.mass`). The forward residual is
    the scaled noise, so ``log q(y|x) = -|xi|^2 / 2`` (constants cancel), and
    ``log q(x|y) = -r^T M r / (4 eps T)`` with ``r = x - y + eps M^{-1} grad(y)``.
    """
    eps = per_chain(step_size, x)
    if _is_matrix(inv_mass):
        quad = quad_mass((x - y).add_(eps * velocity(grad_y, inv_mass)), inv_mass)
    elif isinstance(eps, Tensor) or not _is_one(inv_mass):
        back = (x - y).add_((eps * inv_mass) * grad_y)
        quad = event_sum(back * back / inv_mass)
    else:
        back = (x - y).add_(grad_y, alpha=eps)
        quad = event_sum(back * back)
    return 0.5 * event_sum(noise * noise) - quad.div_(4 * step_size * temperature)


def kinetic(p: Tensor, inv_mass: Mass) -> Tensor:
    """``K(p) = p^T M^{-1} p / 2``, per chain, for any mass of :mod:`torchlangevin.mass`."""
    if _is_matrix(inv_mass):
        return _mass_kinetic(p, inv_mass)
    sq = p * p if _is_one(inv_mass) else p * p * inv_mass
    return 0.5 * event_sum(sq)


def leapfrog(
    energy: Callable[[Tensor], Tensor], x: Tensor, p: Tensor, grad: Tensor,
    step_size: Scalar, inv_mass: Mass, n_steps: int, grad_scale: Scalar = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n_steps`` leapfrog steps on ``H = grad_scale * E(x) + K(p)``, from the cached gradient.

    ``p <- p - eps/2 g``; then ``x <- x + eps M^{-1} p`` (any mass of
    :mod:`torchlangevin.mass`), ``g <- grad E(x)``,
    ``p <- p - eps g`` (half a step on the last). ``n_steps`` gradient calls; the energy
    only at the end. ``x`` and ``p`` are not changed (the first kick and drift write new
    tensors, the later ones update those in place). Returns ``(x, p, E(x), grad E(x))``,
    the energy and gradient unscaled.
    """
    eps, scale = per_chain(step_size, x), per_chain(grad_scale, x)
    matrix = _is_matrix(inv_mass)
    half, full = -0.5 * eps * scale, -eps * scale
    drift = eps if matrix else eps * inv_mass
    p = _axpy(p, half, grad, new=True)
    e = None
    for i in range(n_steps):
        x = _axpy(x, drift, velocity(p, inv_mass) if matrix else p, new=i == 0)
        last = i == n_steps - 1
        e, grad = energy_and_grad(energy, x, need_energy=last)
        _axpy(p, half if last else full, grad)
    return x, p, e, grad


def _axpy(t: Tensor, a: Scalar, u: Tensor, new: bool = False) -> Tensor:
    """``t + a * u``: in place, or into a new tensor with ``new=True``; fused when ``a`` is
    a Python number."""
    if isinstance(a, Tensor):
        return t + u * a if new else t.add_(u * a)
    return torch.add(t, u, alpha=a) if new else t.add_(u, alpha=a)


# -- isokinetic (ESH) integrators for MCLMC and MAMS ------------------------------------------
#
# The velocity ``u`` lives on the unit sphere of the preconditioned coordinates ``y = x / s``
# (``s = sqrt(diag M^{-1})``); the dynamics are Robnik et al.'s (2023, JMLR 24(311)):
#     dy/dt = u,   du/dt = (I - u u^T) f / (d - 1),   f = -s grad E(x),
# which keep ``exp(-E)`` as the marginal of ``x``.

#: the 2-stage minimal-norm integrator's lambda (McLachlan 1995; Omelyan et al. 2003)
MCLACHLAN_LAMBDA = 0.1931833275037836

#: (kind, coefficient) stages of one step: "v" a velocity update of ``coef * eps``, "x" a
#: position update of ``coef * eps``; the last velocity stage uses the gradient the next step
#: starts from, so a step costs one gradient per "x" stage
ISOKINETIC_SCHEMES: dict[str, tuple[tuple[str, float], ...]] = {
    "leapfrog": (("v", 0.5), ("x", 1.0), ("v", 0.5)),
    "mclachlan": (("v", MCLACHLAN_LAMBDA), ("x", 0.5), ("v", 1.0 - 2.0 * MCLACHLAN_LAMBDA),
                  ("x", 0.5), ("v", MCLACHLAN_LAMBDA)),
}


def esh_velocity(u: Tensor, force: Tensor, step: Scalar) -> tuple[Tensor, Tensor]:
    """The closed-form solution of ``du/dt = (I - u u^T) f / (d - 1)`` over time ``step``
    at fixed ``f``, and the kinetic energy it adds, per chain.

    With ``e = f / |f|``, ``delta = step |f| / (d - 1)``, ``zeta = exp(-delta)``:

        u' ∝ e (1 - zeta)(1 + zeta + u.e (1 - zeta)) + 2 zeta u
        dK = (d - 1) (delta - log 2 + log(1 + u.e + (1 - u.e) zeta^2))

    Args:
        u: unit velocities ``(C, *event)`` (``|u| = 1`` per chain).
        force: ``-s grad E`` in the same coordinates, ``(C, *event)``.
        step: the time step, a float or a ``(C,)`` tensor.
    """
    d = math.prod(u.shape[1:])
    norm = event_sum(force * force).sqrt()
    # at an exact stationary point the direction is arbitrary and delta is 0
    unit = force / per_chain(norm.clamp_min(torch.finfo(u.dtype).tiny), u)
    ue = event_sum(u * unit)
    delta = step * norm / (d - 1)
    zeta = torch.exp(-delta)
    a = (1 - zeta) * (1 + zeta + ue * (1 - zeta))
    raw = per_chain(a, u) * unit + per_chain(2 * zeta, u) * u
    new = raw / per_chain(event_sum(raw * raw).sqrt(), u)
    dk = (d - 1) * (delta - math.log(2.0) + torch.log(1 + ue + (1 - ue) * zeta * zeta))
    return new, dk


def isokinetic_step(energy: Callable[[Tensor], Tensor], x: Tensor, u: Tensor, grad: Tensor,
                    step_size: Scalar, scale: Scalar, scheme: str, need_energy: bool = True
                    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """One isokinetic step of ``scheme`` (``"leapfrog"`` or ``"mclachlan"``) from the cached
    gradient.

    ``u <- V(b eps) u`` (:func:`esh_velocity`) and ``x <- x + a eps s u`` alternate with the
    scheme's coefficients (:data:`ISOKINETIC_SCHEMES`); ``s`` is ``scale`` (a float or a
    tensor broadcasting against ``x``: ``sqrt`` of a diagonal inverse mass). Returns
    ``(x, u, E(x), grad E(x), dK)`` with ``dK (C,)`` the kinetic energy change of the step;
    ``E(x)`` is ``None`` unless ``need_energy``.
    """
    stages = ISOKINETIC_SCHEMES[scheme]
    eps = per_chain(step_size, x)
    e = None
    dk = x.new_zeros(x.shape[0])
    n_x = sum(kind == "x" for kind, _ in stages)
    done = 0
    for kind, coef in stages:
        if kind == "v":
            u, change = esh_velocity(u, -(grad if _is_one(scale) else grad * scale),
                                     coef * step_size)
            dk = dk + change
        else:
            x = x + (coef * eps) * (u if _is_one(scale) else u * scale)
            done += 1
            e, grad = energy_and_grad(energy, x, need_energy=need_energy and done == n_x)
    return x, u, e, grad, dk


__all__ += ["MCLACHLAN_LAMBDA", "ISOKINETIC_SCHEMES", "esh_velocity", "isokinetic_step"]
