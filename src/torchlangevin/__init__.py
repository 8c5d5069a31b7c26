"""torchlangevin: Langevin dynamics in PyTorch.

Chains are the leading tensor dimension; kernels are ``init``/``step`` pairs; one
driver, :func:`sample`, runs them all and returns :class:`Chains`.
"""

from . import diagnostics, distributions, schedules
from .adaptation import Adapted, adapt
from .chains import Chains, Summary
from .driver import sample
from .energy import Box, energy_and_grad
from .kernels import (
    HMC,
    MALA,
    Info,
    Kernel,
    Langevin,
    ParallelTempering,
    State,
    UnderdampedLangevin,
    geometric_ladder,
)

__version__ = "0.1.0"

__all__ = [
    "sample", "adapt", "Adapted", "Chains", "Summary",
    "Langevin", "MALA", "HMC", "UnderdampedLangevin", "ParallelTempering", "geometric_ladder",
    "Kernel", "State", "Info", "Box", "energy_and_grad",
    "distributions", "schedules", "diagnostics", "__version__",
]
