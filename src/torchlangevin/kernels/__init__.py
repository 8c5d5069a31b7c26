"""Sampling kernels: ``init(x, params) -> State`` and
``step(state, noise, params, batch=None) -> (State, Info)``; one file per algorithm, one
export line each (the package re-exports every public name here)."""

import types as _types

from .baoab import UnderdampedLangevin, UnderdampedState
from .barker import Barker
from .base import CountedInfo, Info, Kernel, KernelProtocol, Params, State
from .chees import ChEESHMC
from .hmc import HMC
from .langevin import Langevin
from .mala import MALA
from .mclmc import MAMS, MCLMC, MAMSInfo, MCLMCInfo, MCLMCState
from .nuts import NUTS, NUTSInfo
from .tempering import ParallelTempering, TemperingState, geometric_ladder

__all__ = sorted(name for name, value in globals().items()
                 if not name.startswith("_") and not isinstance(value, _types.ModuleType))
