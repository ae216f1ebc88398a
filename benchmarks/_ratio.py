"""The uncertainty of a side-by-side overhead ratio, for the benchmark scripts."""

from __future__ import annotations

import random
from collections.abc import Sequence


def ratio_ci(plain: Sequence[float], instr: Sequence[float], *, level: float = 0.95, draws: int = 4000,
             seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of ``sum(instr) / sum(plain)`` over block pairs (``plain[i]`` ran next to ``instr[i]``).

    Blocks, not single calls, are resampled: load on a shared machine comes and goes over seconds, so
    calls within a block are not independent, and pairs keep each plain block with its neighbour."""
    n = len(plain)
    if n != len(instr) or n < 2:
        raise ValueError("need two or more block pairs")
    rng = random.Random(seed)
    ratios = []
    for _ in range(draws):
        idx = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(instr[i] for i in idx) / sum(plain[i] for i in idx))
    ratios.sort()
    lo = ratios[int((1 - level) / 2 * draws)]
    hi = ratios[min(int((1 + level) / 2 * draws), draws - 1)]
    return lo, hi


def trimmed_mean(xs: Sequence[float], cut: float = 0.1) -> float:
    """Mean of ``xs`` without the ``cut`` share of its lowest and of its highest values."""
    s = sorted(xs)
    k = int(len(s) * cut)
    kept = s[k:len(s) - k] or s
    return sum(kept) / len(kept)


def paired_ratio(plain: Sequence[float], instr: Sequence[float], *, cut: float = 0.1, level: float = 0.95,
                 draws: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """The overhead ratio the benchmarks judge: the trimmed mean (``cut`` off each end) of per-pair ratios
    ``instr[i] / plain[i]``, with its bootstrap interval over pairs.

    Each pair ran back to back, so it saw the same load; on a shared machine that load comes in bursts
    that hit one block of a pair and not the other, and a mean over all blocks is then mostly a measure of
    the bursts. Trimming a tenth off each end drops those and keeps every cost that shows up in most
    blocks (the recording and the commit that end each instrumented block among them)."""
    n = len(plain)
    if n != len(instr) or n < 2:
        raise ValueError("need two or more block pairs")
    ratios = [i / p for p, i in zip(plain, instr, strict=True)]
    rng = random.Random(seed)
    boot = sorted(trimmed_mean([ratios[rng.randrange(n)] for _ in range(n)], cut) for _ in range(draws))
    lo = boot[int((1 - level) / 2 * draws)]
    hi = boot[min(int((1 + level) / 2 * draws), draws - 1)]
    return trimmed_mean(ratios, cut), lo, hi
