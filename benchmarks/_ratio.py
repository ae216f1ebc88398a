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
