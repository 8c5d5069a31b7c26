"""Toy data sets made in code (nothing is downloaded), and scikit-learn's 8x8 digits.

Every toy is ``toy(n, generator, **shape) -> (n, 2)``, seeded by the generator alone (the
global RNG is left alone). :data:`TOYS` names them: ours (``moons``, ``rings``,
``8gaussians``) and TorchEBM's eight 2-D sets with TorchEBM 0.8.9's defaults
(``torchebm.datasets``: ``gaussian_mixture``, ``eight_gaussians``, ``two_moons``,
``swiss_roll``, ``circle``, ``checkerboard``, ``pinwheel``, ``grid``). Where TorchEBM
splits ``n`` evenly over components or lays points on a ``linspace``, these draw each point
independently from the same law, so two calls give a training set and a held-out set.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..util import integer, positive

__all__ = ["TOYS", "TORCHEBM_TOYS", "BENCHMARK_TOYS", "gaussian_mixture", "eight_gaussians",
           "two_moons", "rings", "swiss_roll", "checkerboard", "pinwheel", "grid", "digits",
           "toy"]


def gaussian_mixture(n: int, generator: torch.Generator, n_components: int = 8,
                     std: float = 0.05, radius: float = 1.0) -> Tensor:
    """``n_components`` equal-weight isotropic Gaussians (sd ``std``) with centres
    ``radius (cos 2 pi k / K, sin 2 pi k / K)``."""
    k = torch.randint(integer("n_components", n_components, 1), (n,), generator=generator)
    angle = 2 * math.pi * k / n_components
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centres + std * torch.randn(n, 2, generator=generator)


def eight_gaussians(n: int, generator: torch.Generator, radius: float = 2.0,
                    scale: float = 0.1) -> Tensor:
    """Eight isotropic Gaussians (sd ``scale``) evenly spaced on a circle of ``radius``."""
    return gaussian_mixture(n, generator, 8, scale, radius)


def two_moons(n: int, generator: torch.Generator, noise: float = 0.05, scale: float = 1.5,
              centre: bool = True) -> Tensor:
    """Two interleaved half circles (as scikit-learn's make_moons) with Gaussian noise of sd
    ``noise``, shifted by ``(-0.5, -0.25)`` if ``centre``, then multiplied by ``scale``.
    ``scale=1, centre=False`` is scikit-learn's and TorchEBM's."""
    upper = torch.rand(n, generator=generator) < 0.5
    t = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], -1) if centre else torch.stack([x, y], -1)
    return pts * scale + noise * scale * torch.randn(n, 2, generator=generator)


def rings(n: int, generator: torch.Generator, radii: tuple[float, ...] = (0.8, 1.6, 2.4),
          noise: float = 0.06) -> Tensor:
    """Concentric circles with equal mass per unit length (one radius: a noisy circle)."""
    r = torch.tensor(radii)
    ring = torch.multinomial(r / r.sum(), n, replacement=True, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    pts = r[ring, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return pts + noise * torch.randn(n, 2, generator=generator)


@functools.lru_cache(maxsize=8)
def _roll_moments(arclength: float, noise: float) -> tuple[tuple[float, float], float]:
    """The swiss roll's population mean and mean per-coordinate sd, by the midpoint rule on
    a million points of ``u`` (TorchEBM normalises each draw by its own sample moments)."""
    u = (torch.arange(1_000_000, dtype=torch.float64) + 0.5) / 1_000_000
    t = arclength * math.pi * (1 + 2 * u)
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1)
    sd = (pts.var(0, correction=0) + noise**2).sqrt().mean()
    return tuple(pts.mean(0).tolist()), float(sd)


def swiss_roll(n: int, generator: torch.Generator, noise: float = 0.05,
               arclength: float = 3.0) -> Tensor:
    """``t (cos t, sin t)`` with ``t = arclength * pi * (1 + 2u)``, ``u ~ U[0, 1]``, plus
    noise of sd ``noise``, centred and divided by twice the mean coordinate sd (of the law,
    not of the draw)."""
    u = torch.rand(n, generator=generator)
    t = arclength * math.pi * (1 + 2 * u)
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], -1)
    pts = pts + noise * torch.randn(n, 2, generator=generator)
    mean, sd = _roll_moments(float(arclength), float(noise))
    return (pts - torch.tensor(mean)) / (2 * sd)


def checkerboard(n: int, generator: torch.Generator, range_limit: float = 4.0,
                 noise: float = 0.01) -> Tensor:
    """Uniform on the squares of ``[-lim, lim]^2`` where ``floor(x) + floor(y)`` is odd,
    plus noise of sd ``noise``. Drawn directly (pick a square, then a point in it), not by
    rejection, so the generator's use does not depend on the draws."""
    lim = positive("range_limit", range_limit)
    if lim != int(lim):
        raise ValueError(f"range_limit must be a whole number (the board's squares are 1 "
                         f"wide); got {range_limit!r}")
    side = 2 * int(lim)
    cell = torch.randint(side * side // 2, (n,), generator=generator)
    row = cell // (side // 2)
    col = 2 * (cell % (side // 2)) + (row + 1) % 2  # the odd-parity squares of each row
    corner = torch.stack([col, row], -1).to(torch.get_default_dtype()) - lim
    pts = corner + torch.rand(n, 2, generator=generator)
    return pts + noise * torch.randn(n, 2, generator=generator)


def pinwheel(n: int, generator: torch.Generator, n_classes: int = 5, noise: float = 0.05,
             radial_scale: float = 2.0, angular_scale: float = 0.1,
             spiral_scale: float = 5.0) -> Tensor:
    """``n_classes`` curved blades: ``t = sqrt(u)``, radius ``radial_scale * t``, angle
    ``2 pi k / K + spiral_scale * t + angular_scale * z``, plus noise of sd ``noise``."""
    k = torch.randint(integer("n_classes", n_classes, 1), (n,), generator=generator)
    t = torch.rand(n, generator=generator).sqrt()
    theta = 2 * math.pi * k / n_classes + spiral_scale * t \
        + angular_scale * torch.randn(n, generator=generator)
    pts = radial_scale * t[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], -1)
    return pts + noise * torch.randn(n, 2, generator=generator)


def grid(n: int, generator: torch.Generator, n_per_dim: int = 10, range_limit: float = 1.0,
         noise: float = 0.01) -> Tensor:
    """Equal-weight Gaussians (sd ``noise``) on the ``n_per_dim x n_per_dim`` grid
    ``linspace(-lim, lim, n_per_dim)^2`` (TorchEBM's ``GridDataset`` puts one point on
    each; this draws the grid point of each sample at random)."""
    m = integer("n_per_dim", n_per_dim, 2)
    coords = torch.linspace(-range_limit, range_limit, m)
    idx = torch.randint(m, (n, 2), generator=generator)
    return coords[idx] + noise * torch.randn(n, 2, generator=generator)


#: TorchEBM 0.8.9's eight 2-D sets, with its defaults
TORCHEBM_TOYS = {
    "gaussian_mixture": gaussian_mixture,
    "eight_gaussians": functools.partial(eight_gaussians, radius=2.0, scale=0.02),
    "two_moons": functools.partial(two_moons, noise=0.05, scale=1.0, centre=False),
    "swiss_roll": swiss_roll,
    "circle": functools.partial(rings, radii=(1.0,), noise=0.05),
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "grid": grid,
}

#: every toy by name: ours and TorchEBM's
TOYS = {"8gaussians": eight_gaussians, "moons": two_moons, "rings": rings, **TORCHEBM_TOYS}

#: the ten sets the issue's bars are measured on: TorchEBM's eight, our moons and rings
BENCHMARK_TOYS = (*TORCHEBM_TOYS, "moons", "rings")


def toy(name: str, n: int, generator: torch.Generator) -> Tensor:
    """``n`` points of the toy ``name`` (a key of :data:`TOYS`), float32 ``(n, 2)``."""
    if name not in TOYS:
        raise ValueError(f"data must be one of {sorted(TOYS)}; got {name!r}")
    return TOYS[name](integer("n", n, 1), generator).float()


def digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 digits (ships with the package), pixels scaled to [-1, 1]:
    images ``(1797, 1, 8, 8)`` and labels ``(1797,)``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - extra
        raise ImportError("digits need scikit-learn: pip install 'torchlangevin[tabular]'") \
            from err
    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0
    return images.unsqueeze(1), torch.tensor(d.target)
