"""Toy data sets made in code (nothing is downloaded), and scikit-learn's 8x8 digits."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def eight_gaussians(n: int, generator: torch.Generator, radius: float = 2.0,
                    scale: float = 0.1) -> Tensor:
    """Eight isotropic Gaussians (sd ``scale``) evenly spaced on a circle of ``radius``."""
    k = torch.randint(8, (n,), generator=generator)
    angle = 2 * math.pi * k / 8
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return centres + scale * torch.randn(n, 2, generator=generator)


def two_moons(n: int, generator: torch.Generator, noise: float = 0.05) -> Tensor:
    """Two interleaved half circles (as scikit-learn's make_moons), centred near 0."""
    upper = torch.rand(n, generator=generator) < 0.5
    t = math.pi * torch.rand(n, generator=generator)
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], -1) * 1.5
    return pts + noise * 1.5 * torch.randn(n, 2, generator=generator)


def rings(n: int, generator: torch.Generator, radii: tuple[float, ...] = (0.8, 1.6, 2.4),
          noise: float = 0.06) -> Tensor:
    """Concentric circles with equal mass per unit length."""
    r = torch.tensor(radii)
    ring = torch.multinomial(r / r.sum(), n, replacement=True, generator=generator)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    pts = r[ring, None] * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    return pts + noise * torch.randn(n, 2, generator=generator)


TOYS = {"8gaussians": eight_gaussians, "moons": two_moons, "rings": rings}


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
