"""Distances between a generated and a target distribution over the same bins, and sample statistics."""

from __future__ import annotations

import numpy as np

_EPS = 1e-12


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats; bins where p is 0 contribute 0 (q must be positive where p is)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], _EPS))))


def js(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in nats (between 0 and ln 2)."""
    m = 0.5 * (np.asarray(p, float) + np.asarray(q, float))
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def ks(p: np.ndarray, q: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    return float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance."""
    return float(0.5 * np.sum(np.abs(np.asarray(p, float) - np.asarray(q, float))))


def w1(p: np.ndarray, q: np.ndarray) -> float:
    """Wasserstein-1 distance on the unit-spaced integer grid (in bins)."""
    return float(np.sum(np.abs(np.cumsum(p) - np.cumsum(q))[:-1]))


def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy in bits (mode collapse drives it towards 0)."""
    p = np.asarray(p, float)
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def shot_noise(p: np.ndarray, shots: int | None) -> float:
    """Largest standard error over the bins of a distribution estimated from ``shots`` samples (0 if exact)."""
    if not shots:
        return 0.0
    p = np.asarray(p, float)
    return float(np.max(np.sqrt(p * (1.0 - p) / shots)))


def divergences(p: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """All contract divergences of ``p`` from ``q``: kl, js, ks, tvd, w1."""
    return {"kl": kl(p, q), "js": js(p, q), "ks": ks(p, q), "tvd": tvd(p, q), "w1": w1(p, q)}
