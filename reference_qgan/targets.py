"""Target distributions over the integer grid 0..2**n - 1, computed analytically (no data files).

Bin ``k`` holds the probability mass of ``[k - 0.5, k + 0.5)`` (the lowest bin's lower edge clipped at
the distribution's support), renormalised over the grid: the rounded-and-truncated distributions of
Zoufal, Lucchi and Woerner (npj Quantum Information 5, 103, 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TARGETS = ("lognormal", "triangular", "bimodal")


def _normal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.5 * (1.0 + math.erf((x - mu) / (sigma * math.sqrt(2.0))))


def _lognormal_cdf(x: float, mu: float, sigma: float) -> float:
    return 0.0 if x <= 0 else _normal_cdf(math.log(x), mu, sigma)


def _triangular_cdf(x: float, low: float, high: float, mode: float) -> float:
    if x <= low:
        return 0.0
    if x >= high:
        return 1.0
    if x <= mode:
        return (x - low) ** 2 / ((high - low) * (mode - low))
    return 1.0 - (high - x) ** 2 / ((high - low) * (high - mode))


def _binned(cdf: Callable[[float], float], bins: int) -> np.ndarray:
    edges = [max(k - 0.5, 0.0) if k == 0 else k - 0.5 for k in range(bins + 1)]
    mass = np.array([cdf(edges[k + 1]) - cdf(edges[k]) for k in range(bins)], dtype=float)
    return mass / mass.sum()


def lognormal(bins: int = 8, mu: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """Log-normal(mu, sigma) mass of [k-0.5, k+0.5) clipped at 0, renormalised over 0..bins-1."""
    return _binned(lambda x: _lognormal_cdf(x, mu, sigma), bins)


def triangular(bins: int = 8, low: float = 0.0, high: float = 7.0, mode: float = 2.0) -> np.ndarray:
    """Triangular(low, high, mode) binned the same way."""
    return _binned(lambda x: _triangular_cdf(x, low, high, mode), bins)


def bimodal(bins: int = 8) -> np.ndarray:
    """Equal mixture of N(0.5, 1) and N(3.5, 0.5), binned the same way (mass below -0.5 dropped)."""
    def cdf(x: float) -> float:
        return 0.5 * _normal_cdf(x, 0.5, 1.0) + 0.5 * _normal_cdf(x, 3.5, 0.5)

    edges = [k - 0.5 for k in range(bins + 1)]
    mass = np.array([cdf(edges[k + 1]) - cdf(edges[k]) for k in range(bins)])
    return mass / mass.sum()


def target(name: str, bins: int = 8) -> np.ndarray:
    """A preset target by name (``lognormal``, ``triangular`` or ``bimodal``)."""
    if name == "lognormal":
        return lognormal(bins)
    if name == "triangular":
        return triangular(bins, high=float(bins - 1))
    if name == "bimodal":
        return bimodal(bins)
    from qobs.errors import ConfigError

    raise ConfigError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")


def discretised_normal(bins: int = 8, mu: float = 1.0, sigma: float = 1.0) -> np.ndarray:
    """Probabilities proportional to the N(mu, sigma) density at the grid points 0..bins-1."""
    x = np.arange(bins, dtype=float)
    d = np.exp(-0.5 * ((x - mu) / sigma) ** 2)
    return d / d.sum()
