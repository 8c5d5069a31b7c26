"""torchlangevin: Langevin dynamics in PyTorch.

Chains are the leading tensor dimension; kernels are pure ``init``/``step`` functions that
take their noise, parameters and minibatch as inputs; one driver, :func:`sample`, runs them
all through one block runner and returns :class:`Chains`.
"""

from . import diagnostics, distributions, schedules
from .adaptation import Adapted, adapt
from .chains import Chains, Summary
from .chees_adaptation import ChEESAdapted, chees_adapt
from .driver import sample
from .energy import Box, energy_and_grad
from .kernels import *  # noqa: F403 - every kernel, one export line each in kernels/
from .kernels import __all__ as _kernel_names
from .mclmc_tuning import Tuned, tune_mams, tune_mclmc

__version__ = "0.1.0"

#: the applications, imported on first use: ``tl.ebm.fit``, ``tl.slt.llc``, ...
_LAZY = ("ebm", "score", "posterior", "slt", "tabular", "model", "pyro_model", "viz",
         "distributed")
#: functions of the applications, imported on first use: ``tl.sample_posterior``, ...
_LAZY_FUNCTIONS = {"sample_posterior": "model", "from_pyro": "pyro_model"}


def __getattr__(name: str):
    if name in _LAZY or name in _LAZY_FUNCTIONS:
        import importlib

        if name in _LAZY:
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{_LAZY_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'torchlangevin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY, *_LAZY_FUNCTIONS])

__all__ = [
    "sample", "adapt", "Adapted", "chees_adapt", "ChEESAdapted", "tune_mclmc", "tune_mams",
    "Tuned", "Chains", "Summary",
    *_kernel_names, "Box", "energy_and_grad",
    "distributions", "schedules", "diagnostics", "__version__",
]
