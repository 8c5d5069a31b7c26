"""Sampling kernels: ``init(x) -> State`` and ``step(state, generator) -> (State, Info)``."""

from .base import Info, Kernel, State
from .hmc import HMC
from .langevin import Langevin
from .mala import MALA

__all__ = ["Kernel", "State", "Info", "Langevin", "MALA", "HMC"]
