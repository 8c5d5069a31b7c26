"""Two-sample distances for judging generated samples against held-out data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..util import integer


def _flat(x: Tensor) -> Tensor:
    return torch.as_tensor(x).detach().reshape(len(x), -1).double()


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None, unbiased: bool = False) -> float:
    """Squared MMD with a Gaussian kernel ``exp(-|a-b|^2 / (2 h^2))``; ``h`` is the median
    pairwise distance of the pooled samples unless given (Gretton et al. 2012).

    The default V-statistic is positive with an ``O(1/n)`` floor, so a model's value can be
    compared with the floor of two samples of the data; ``unbiased=True`` gives the
    U-statistic (mean 0 when the laws agree, may be negative)."""
    x, y = _flat(x), _flat(y)
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).square()
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt())
    k = torch.exp(-d2 / (2 * bandwidth**2))
    n, m = len(x), len(y)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    return float((kxx.sum() - kxx.trace()) / (n * (n - 1))
                 + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.mean())


def energy_distance(x: Tensor, y: Tensor) -> float:
    """``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (Székely & Rizzo), V-statistic."""
    x, y = _flat(x), _flat(y)
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean()
                 - torch.cdist(y, y).mean())


#: the default kernel widths of :func:`mmd_multi`, as fractions of the data's scale (the
#: median pairwise distance), halving from 1 to 1/16: the narrow ones see the fine structure
#: that the median bandwidth misses
BANDWIDTH_FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def data_scale(x: Tensor, max_points: int = 2000) -> float:
    """The median pairwise distance of (the first ``max_points`` rows of) ``x``."""
    return float(torch.pdist(_flat(x)[:max_points]).median())


def _check_bandwidths(bandwidths: Sequence[float]) -> tuple[float, ...]:
    if not isinstance(bandwidths, Sequence) or not bandwidths or \
            any(not (isinstance(h, (int, float)) and h > 0) for h in bandwidths):
        raise ValueError(f"bandwidths must be a non-empty sequence of numbers > 0; "
                         f"got {bandwidths!r}")
    return tuple(sorted((float(h) for h in bandwidths), reverse=True))


def _mean_kernel(a: Tensor, b: Tensor, widths: tuple[float, ...]) -> Tensor:
    """``mean_ij exp(-|a_i - b_j|^2 / (2 h^2))`` for each of ``widths`` (widest first)."""
    d2 = torch.cdist(a, b).square_()
    k = torch.exp(d2 * (-0.5 / widths[0]**2))
    means = [k.mean()]
    for wider, h in zip(widths, widths[1:], strict=False):
        if math.isclose(wider, 2 * h):  # exp(-d2 / (2 (h/2)^2)) = k_h^4: two products, no exp
            k = k.mul_(k).mul_(k)
        else:
            k = torch.exp(d2 * (-0.5 / h**2))
        means.append(k.mean())
    return torch.stack(means)


def mmd_multi(x: Tensor, y: Tensor, bandwidths: Sequence[float]) -> float:
    """Squared MMD (V-statistic) with the sum of Gaussian kernels
    ``k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))`` over ``bandwidths``:
    ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``."""
    widths = _check_bandwidths(bandwidths)
    x, y = _flat(x), _flat(y)
    return float((_mean_kernel(x, x, widths) + _mean_kernel(y, y, widths)
                  - 2 * _mean_kernel(x, y, widths)).sum())


def binned_tv_2d(x: Tensor, y: Tensor, low: Sequence[float], high: Sequence[float],
                 bins: int = 20) -> float:
    """Total variation ``1/2 sum |p_b - q_b|`` between the histograms of two 2-D samples on
    a ``bins x bins`` grid over ``[low, high]`` (points outside fall in a bin of their own,
    so mass outside the box counts)."""
    def hist(z: Tensor) -> Tensor:
        z = _flat(z)
        if z.shape[1] != 2:
            raise ValueError(f"binned_tv_2d needs 2-D points; got shape {tuple(z.shape)}")
        lo, hi = torch.tensor(low, dtype=z.dtype), torch.tensor(high, dtype=z.dtype)
        cell = ((z - lo) / (hi - lo) * bins).floor().long()
        inside = ((cell >= 0) & (cell < bins)).all(1)
        flat = torch.where(inside, cell[:, 0] * bins + cell[:, 1], bins * bins)
        return torch.bincount(flat, minlength=bins * bins + 1).double() / len(z)
    return float(0.5 * (hist(x) - hist(y)).abs().sum())


@dataclass
class Judgement:
    """A sample judged against held-out data, next to the floor (training data judged the
    same way): means over ``n_sets`` sets of ``len(held_out)`` points.

    ``mmd``/``mmd_floor``: :func:`mmd_multi` at ``bandwidths``; ``tv``/``tv_floor``:
    :func:`binned_tv_2d` (2-D data only, else ``None``); the ratios are value / floor.
    ``mmd_per_bandwidth``/``floor_per_bandwidth``: the sum's terms, one per bandwidth
    (widest first). The sum's floor is mostly the narrow kernels' ``~2/n`` self-terms,
    which can dilute a difference seen at one scale: ``worst_ratio`` is the largest
    ratio of one term to its floor."""

    mmd: float
    mmd_floor: float
    tv: float | None
    tv_floor: float | None
    bandwidths: tuple[float, ...]
    mmd_per_bandwidth: tuple[float, ...] = ()
    floor_per_bandwidth: tuple[float, ...] = ()

    @property
    def worst_ratio(self) -> float:
        return max(m / f for m, f in zip(self.mmd_per_bandwidth, self.floor_per_bandwidth,
                                         strict=True))

    @property
    def mmd_ratio(self) -> float:
        return self.mmd / self.mmd_floor

    @property
    def tv_ratio(self) -> float | None:
        return None if self.tv is None else self.tv / self.tv_floor


def judge(samples: Tensor, train: Tensor, held_out: Tensor, n_sets: int = 5,
          bandwidths: Sequence[float] | None = None, bins: int = 20) -> Judgement:
    """Judge ``samples`` against ``held_out`` with :func:`mmd_multi` (default bandwidths
    :data:`BANDWIDTH_FRACTIONS` times the held-out data's :func:`data_scale`) and, in 2-D,
    :func:`binned_tv_2d` on a grid over the held-out range padded by 10%.

    The first ``n_sets * len(held_out)`` rows of ``samples`` and of ``train`` are split into
    ``n_sets`` sets; each is compared with ``held_out`` and the values averaged (one draw
    of an MMD^2 is close to a chi-square with few degrees of freedom, so single values
    vary widely). The floor is what the data itself scores against held-out data."""
    n_sets = integer("n_sets", n_sets, 1)
    n = len(held_out)
    for name, z in (("samples", samples), ("train", train)):
        if len(z) < n_sets * n:
            raise ValueError(f"{name} has {len(z)} rows; judge needs n_sets * "
                             f"len(held_out) = {n_sets * n}")
    if bandwidths is None:
        scale = data_scale(held_out)
        bandwidths = tuple(f * scale for f in BANDWIDTH_FRACTIONS)
    widths = _check_bandwidths(bandwidths)
    ref = _flat(held_out)
    k_ref = _mean_kernel(ref, ref, widths)

    def mmd_to_ref(z: Tensor) -> Tensor:
        return _mean_kernel(z, z, widths) + k_ref - 2 * _mean_kernel(z, ref, widths)

    sets = [(_flat(samples[i * n:(i + 1) * n]), _flat(train[i * n:(i + 1) * n]))
            for i in range(n_sets)]
    mmd_s = sum(mmd_to_ref(s) for s, _ in sets) / n_sets
    mmd_t = sum(mmd_to_ref(t) for _, t in sets) / n_sets
    tv = tv_floor = None
    if ref.shape[1] == 2:
        lo, hi = ref.min(0).values, ref.max(0).values
        pad = 0.1 * (hi - lo)
        low, high = (lo - pad).tolist(), (hi + pad).tolist()
        tv = sum(binned_tv_2d(s, held_out, low, high, bins) for s, _ in sets) / n_sets
        tv_floor = sum(binned_tv_2d(t, held_out, low, high, bins) for _, t in sets) / n_sets
    return Judgement(float(mmd_s.sum()), float(mmd_t.sum()), tv, tv_floor, widths,
                     tuple(mmd_s.tolist()), tuple(mmd_t.tolist()))


def frechet_distance(x: Tensor, y: Tensor) -> float:
    """``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x^1/2 S_y S_x^1/2)^1/2)`` between Gaussians
    fitted to two samples of features (Heusel et al. 2017's FID formula, any features)."""
    x, y = _flat(x), _flat(y)
    mx, my = x.mean(0), y.mean(0)
    sx, sy = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)

    def sqrtm(m: Tensor) -> Tensor:
        vals, vecs = torch.linalg.eigh((m + m.T) / 2)
        return vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T

    root_x = sqrtm(sx)
    cross = sqrtm(root_x @ sy @ root_x)
    return float((mx - my).square().sum() + torch.trace(sx + sy - 2 * cross))


class FeatureClassifier:
    """A classifier of real data whose penultimate layer gives features for a Frechet
    distance (the FID idea at small scale): scikit-learn's ``MLPClassifier`` with one hidden
    ReLU layer of ``hidden`` units, fitted on ``(x, labels)``. :meth:`features` is that
    layer, ``relu(x W_1 + b_1)``; :meth:`top_prob` the mean probability of the top class;
    :meth:`frechet` the :func:`frechet_distance` of two samples in the features. Needs
    scikit-learn."""

    def __init__(self, x: Tensor, labels: Tensor, hidden: int = 64, seed: int = 0) -> None:
        from sklearn.neural_network import MLPClassifier

        self.net = MLPClassifier((integer("hidden", hidden, 1),), max_iter=1000,
                                 random_state=seed).fit(_flat(x).numpy(),
                                                        torch.as_tensor(labels).numpy())

    def features(self, x: Tensor) -> Tensor:
        w, b = (torch.as_tensor(a) for a in (self.net.coefs_[0], self.net.intercepts_[0]))
        return torch.relu(_flat(x) @ w.double() + b.double())

    def top_prob(self, x: Tensor) -> float:
        return float(self.net.predict_proba(_flat(x).numpy()).max(1).mean())

    def frechet(self, x: Tensor, y: Tensor) -> float:
        return frechet_distance(self.features(x), self.features(y))


class DigitsJudge:
    """Digits split 80/20 by ``generator`` (``train``, ``held``), and two judges fitted on
    the 80% of real digits: a logistic regression (:meth:`top_logistic`, the mean
    probability of its top class) and a :class:`FeatureClassifier` (``mlp``: its top-class
    probability and the Frechet distance in its hidden layer). :meth:`frechet_train` is
    that distance for ``n`` real training digits, the scale to read the others on. Needs
    scikit-learn."""

    def __init__(self, images: Tensor, labels: Tensor, generator: torch.Generator,
                 seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression

        order = torch.randperm(len(images), generator=generator)
        cut = int(0.8 * len(images))
        self.train, self.held = images[order[:cut]], images[order[cut:]]
        flat = self.train.reshape(cut, -1)
        self.logistic = LogisticRegression(max_iter=2000).fit(flat.numpy(),
                                                              labels[order[:cut]].numpy())
        self.mlp = FeatureClassifier(flat, labels[order[:cut]], seed=seed)

    def top_logistic(self, x: Tensor) -> float:
        return float(self.logistic.predict_proba(x.reshape(len(x), -1).numpy()).max(1).mean())

    def frechet_train(self, n: int) -> float:
        return self.mlp.frechet(self.train[:n], self.held)
