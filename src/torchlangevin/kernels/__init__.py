"""Sampling kernels: ``init(x) -> State`` and ``step(state, generator) -> (State, Info)``."""

from .baoab import UnderdampedLangevin, UnderdampedState
from .base import Info, Kernel, State
from .hmc import HMC
from .langevin import Langevin
from .mala import MALA
from .tempering import ParallelTempering, TemperingState, geometric_ladder

__all__ = ["Kernel", "State", "Info", "Langevin", "MALA", "HMC", "UnderdampedLangevin",
           "UnderdampedState", "ParallelTempering", "TemperingState", "geometric_ladder"]
