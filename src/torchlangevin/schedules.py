"""Step-size and noise schedules: pure functions ``value = schedule(step)``.

``step`` counts from 0 over the whole run (burn-in included). A schedule also
accepts a NumPy array of steps and returns an array, so a driver can tabulate
every value once. No ``.step()``, no hidden state.
"""

from __future__ import annotations

import math

import numpy as np

from .util import integer

__all__ = ["Schedule", "Constant", "Linear", "Cosine", "Exponential", "Geometric", "Warmup",
           "as_schedule"]


def _number(name: str, value: float, positive: bool = False) -> float:
    if isinstance(value, (str, bytes, bool)):  # float("0.1") and float(True) would pass
        raise TypeError(f"{name} must be a number; got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(v) or (positive and v <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    return v


class Schedule:
    """Base class: subclasses implement ``__call__(step)`` for ints and arrays."""

    def __call__(self, step):  # pragma: no cover - abstract
        raise NotImplementedError

    def table(self, n_steps: int) -> np.ndarray:
        """Values at steps ``0 .. n_steps-1`` as a float64 array."""
        return np.broadcast_to(np.asarray(self(np.arange(n_steps)), dtype=np.float64),
                               (n_steps,))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """``v(t) = value``."""

    def __init__(self, value: float) -> None:
        self.value = _number("value", value)

    def __call__(self, step):
        return self.value + 0 * np.asarray(step, dtype=np.float64) if np.ndim(step) else self.value


class Linear(Schedule):
    """``v(t) = start + (end - start) * min(t / (n_steps - 1), 1)``."""

    def __init__(self, start: float, end: float, n_steps: int) -> None:
        self.start, self.end = _number("start", start), _number("end", end)
        self.n_steps = integer("n_steps", n_steps, 1)

    def _frac(self, step):
        return np.clip(np.asarray(step, dtype=np.float64) / max(self.n_steps - 1, 1), 0.0, 1.0)

    def __call__(self, step):
        v = self.start + (self.end - self.start) * self._frac(step)
        return float(v) if np.ndim(v) == 0 else v


class Cosine(Linear):
    """``v(t) = end + (start - end) * (1 + cos(pi * min(t / (n_steps - 1), 1))) / 2``."""

    def __call__(self, step):
        v = self.end + (self.start - self.end) * 0.5 * (1 + np.cos(np.pi * self._frac(step)))
        return float(v) if np.ndim(v) == 0 else v


class Geometric(Linear):
    """``v(t) = start * (end / start) ** min(t / (n_steps - 1), 1)``: log-linear annealing."""

    def __init__(self, start: float, end: float, n_steps: int) -> None:
        super().__init__(_number("start", start, positive=True),
                         _number("end", end, positive=True), n_steps)

    def __call__(self, step):
        v = self.start * (self.end / self.start) ** self._frac(step)
        return float(v) if np.ndim(v) == 0 else v


class Exponential(Schedule):
    """``v(t) = max(start * decay_rate ** t, min_value)``."""

    def __init__(self, start: float, decay_rate: float, min_value: float = 0.0) -> None:
        self.start = _number("start", start)
        self.decay_rate = _number("decay_rate", decay_rate, positive=True)
        if self.decay_rate > 1:
            raise ValueError(f"decay_rate must be in (0, 1]; got {decay_rate!r}")
        self.min_value = _number("min_value", min_value)

    def __call__(self, step):
        v = np.maximum(self.start * self.decay_rate ** np.asarray(step, dtype=np.float64),
                       self.min_value)
        return float(v) if np.ndim(v) == 0 else v


class Warmup(Schedule):
    """Linear ramp from ``init_factor * main(0)`` to ``main(0)`` over ``warmup_steps``,
    then ``main(t - warmup_steps)``."""

    def __init__(self, main: Schedule | float, warmup_steps: int, init_factor: float = 0.01):
        self.main = as_schedule("main", main)
        self.warmup_steps = integer("warmup_steps", warmup_steps, 1)
        self.init_factor = _number("init_factor", init_factor)

    def __call__(self, step):
        t = np.asarray(step, dtype=np.float64)
        w = self.warmup_steps
        ramp = self.main(0) * (self.init_factor + (1 - self.init_factor) * t / w)
        v = np.where(t < w, ramp, self.main(np.maximum(t - w, 0)))
        return float(v) if np.ndim(v) == 0 else v


def as_schedule(name: str, value: float | Schedule) -> Schedule:
    """A float becomes ``Constant``; a ``Schedule`` passes; anything else fails naming ``name``."""
    if isinstance(value, Schedule):
        return value
    if callable(value):
        raise TypeError(f"{name} must be a float or a torchlangevin.schedules.Schedule; "
                        f"got {type(value).__name__} (wrap a function in a Schedule subclass)")
    return Constant(_number(name, value))
