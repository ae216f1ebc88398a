"""Side-by-side overhead ratios for the benchmark scripts: the estimate, its uncertainty, the verdict, and
the bookkeeping that keeps qobs's own background work and the cyclic GC's pauses visible."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


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
    """Mean of ``xs`` without its ``floor(len * cut)`` lowest and as many highest values."""
    s = sorted(xs)
    k = int(len(s) * cut)
    kept = s[k:len(s) - k] or s
    return sum(kept) / len(kept)


def paired_ratio(plain: Sequence[float], instr: Sequence[float], *, cut: float = 0.0, level: float = 0.95,
                 draws: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """The mean of the per-pair ratios ``instr[i] / plain[i]`` (each pair ran back to back, under the same
    load), with its bootstrap interval over pairs. The benchmarks judge this mean: it charges every cost qobs
    adds, the rare large ones too (a commit, a collection). ``cut`` > 0 gives the trimmed mean instead, a
    diagnostic of how much of the spread is bursts of load that hit one block of a pair."""
    n = len(plain)
    if n != len(instr) or n < 2:
        raise ValueError("need two or more block pairs")
    ratios = [i / p for p, i in zip(plain, instr, strict=True)]
    rng = random.Random(seed)
    boot = sorted(trimmed_mean([ratios[rng.randrange(n)] for _ in range(n)], cut) for _ in range(draws))
    lo = boot[int((1 - level) / 2 * draws)]
    hi = boot[min(int((1 + level) / 2 * draws), draws - 1)]
    return trimmed_mean(ratios, cut), lo, hi


def verdict(lo: float, hi: float, target: float) -> str:
    """``met`` when the whole interval is at or under the target, ``missed`` when it is all above it, else
    ``inconclusive``: the machine's noise does not let this run tell."""
    return "met" if hi <= target else "missed" if lo > target else "inconclusive"


def qobs_threads_cpu() -> dict[int, float]:
    """CPU seconds each live qobs background thread (named ``qobs-*``) has used, by thread ident.

    The pipeline stays up through plain blocks (only the adapters' patches are switched), so its threads'
    idle rounds land in plain blocks too: the scripts take them out of the plain blocks' CPU time."""
    out = {}
    for t in threading.enumerate():
        if t.name.startswith("qobs-") and t.ident is not None:
            try:
                out[t.ident] = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except (OSError, AttributeError):  # ended meanwhile; or a platform without thread CPU clocks
                pass
    return out


def qobs_cpu_since(before: dict[int, float]) -> float:
    """CPU seconds qobs's background threads used since ``before = qobs_threads_cpu()``."""
    return sum(v - before.get(k, 0.0) for k, v in qobs_threads_cpu().items())


class FullCollections:
    """Counts the cyclic GC's full (generation 2) collections and their CPU pause, per variant, leaving out
    the collections the benchmark asks for itself (``explicit()``).

    Each block starts from an explicit collection, untimed: switching the patches allocates what a real
    program allocates once. That also empties the heap qobs's garbage would build up over a long run, so
    the counts per variant are printed: a variant that makes full collections more frequent shows there."""

    def __init__(self) -> None:
        self.variant = ""
        self.count: dict[str, int] = {}
        self.pause: dict[str, float] = {}
        self._t = 0.0
        self._explicit = False
        gc.callbacks.append(self._cb)

    @contextmanager
    def explicit(self) -> Iterator[None]:
        self._explicit = True
        try:
            yield
        finally:
            self._explicit = False

    def collect(self) -> None:
        with self.explicit():
            gc.collect()

    def _cb(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2 or self._explicit:
            return
        if phase == "start":
            self._t = time.process_time()
        else:
            self.count[self.variant] = self.count.get(self.variant, 0) + 1
            self.pause[self.variant] = self.pause.get(self.variant, 0.0) + time.process_time() - self._t

    def per_1000(self, variant: str, calls: int) -> float:
        return round(self.count.get(variant, 0) * 1000 / max(calls, 1), 2)
