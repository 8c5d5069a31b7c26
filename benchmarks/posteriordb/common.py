"""What the posteriordb ports share: where the data lie, float64 tensors, unchecked
distributions, and Stan's ``ordered`` / ``positive_ordered`` vectors as
``torch.distributions`` constraints with Stan's transforms (registered with ``biject_to``,
so a :class:`~torchlangevin.model.Param` takes them like any other constraint)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Normal, biject_to, constraints
from torch.distributions.transforms import Transform

__all__ = ["ROOT", "read_zipped_json", "normal", "t64", "ordered_vector",
           "positive_ordered_vector", "OrderedTransform"]

#: where the posteriordb subset lies (copied from stan-dev/posteriordb, see its README)
ROOT = Path(__file__).resolve().parents[3] / "shared" / "posteriordb"
if not ROOT.exists():
    ROOT = Path("/work/shared/posteriordb")


def read_zipped_json(path: Path) -> object:
    """The JSON document inside a one-file zip archive."""
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read(z.namelist()[0]))


def normal(loc, scale) -> Normal:
    """A normal whose arguments are not checked: a trajectory may leave the support
    numerically (an energy of NaN is a divergence, where a check would raise)."""
    return Normal(loc, scale, validate_args=False)


def t64(values) -> Tensor:
    """``values`` as a float64 tensor (Stan computes in double)."""
    return torch.tensor(values, dtype=torch.float64)


class _Ordered(constraints.Constraint):
    """Strictly increasing vectors (Stan's ``ordered``), or positive and strictly
    increasing ones (``positive_ordered``)."""

    event_dim = 1

    def __init__(self, positive: bool) -> None:
        self.positive = positive
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        increasing = (value[..., 1:] > value[..., :-1]).all(-1)
        return increasing & (value[..., 0] > 0) if self.positive else increasing

    def __repr__(self) -> str:
        return "positive_ordered_vector" if self.positive else "ordered_vector"


ordered_vector = _Ordered(positive=False)
positive_ordered_vector = _Ordered(positive=True)


class OrderedTransform(Transform):
    """Stan's ordered transform: ``x_1 = u_1`` (``exp(u_1)`` when positive),
    ``x_k = x_{k-1} + exp(u_k)``, so

        log |det J| = sum_{k >= 2} u_k   (+ u_1 when positive).
    """

    domain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, positive: bool = False, cache_size: int = 0) -> None:
        self.positive = positive
        super().__init__(cache_size=cache_size)

    @property
    def codomain(self) -> constraints.Constraint:
        return positive_ordered_vector if self.positive else ordered_vector

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderedTransform) and other.positive == self.positive

    def _steps(self, u: Tensor) -> Tensor:
        first = u[..., :1].exp() if self.positive else u[..., :1]
        return torch.cat([first, u[..., 1:].exp()], -1)

    def _call(self, u: Tensor) -> Tensor:
        return self._steps(u).cumsum(-1)

    def _inverse(self, x: Tensor) -> Tensor:
        first = x[..., :1].log() if self.positive else x[..., :1]
        return torch.cat([first, x.diff(dim=-1).log()], -1)

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor) -> Tensor:
        return (u if self.positive else u[..., 1:]).sum(-1)


@biject_to.register(_Ordered)
def _ordered_bijection(constraint: _Ordered) -> Transform:
    return OrderedTransform(positive=constraint.positive)
