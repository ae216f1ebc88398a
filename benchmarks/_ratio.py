"""Side-by-side overhead ratios for the benchmark scripts: the estimate, its uncertainty, the verdict, and
the bookkeeping that keeps qobs's own background work and the cyclic GC's pauses visible.

How the estimate is made (``Meter``, ``charged_ratio``). Plain and instrumented blocks of calls alternate in one
process (A B, then B A). A block's CPU is split in two:

- the program's own: process CPU less qobs's background threads' and less the full-GC pauses inside it. Its
  per-pair ratio is noisy on a shared VM in a heavy-tailed way (measured here, plain against plain: 5th to 95th
  percentile 0.76 to 1.32 at every block length from 8 ms to 0.5 s, interquartile 0.97 to 1.03). Its
  interquartile mean (``TRIM``) is the core estimate; against the mean it narrows the 95 % interval about
  2.5 times, for no bias on that symmetric noise.
- what qobs does in bursts, counted in full on its own clocks rather than trimmed: its threads' CPU during the
  instrumented blocks (the recorder's batches, the store's commits), the ``qobs.flush()`` that ends each of
  them (what the block left to record and commit), and the full-GC pauses of the instrumented blocks beyond
  the plain blocks'. That is charged as a share of the plain blocks' CPU.

Two effects lean either way. The slowdown that qobs's threads, running on another core, cause to the
program's threads through shared hardware (measured ~0.4x the threads' CPU here) is in the instrumented
blocks' own CPU, where the trimming may leave part of it out. And the calls after a switch of the patches
run with cold caches: shorter blocks gave higher ratios (the pessimistic way, about 0.2 / k for k calls).
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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


TRIM = 0.25  # the core estimate is the interquartile mean of the per-pair ratios


def charged_ratio(plain: Sequence[float], instr: Sequence[float], charged: float, *, level: float = 0.95,
                  draws: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """The overhead ratio and its bootstrap interval: the interquartile mean of the per-pair ratios of the
    program's own CPU (``plain[i]`` and ``instr[i]``, blocks of equally many calls that ran back to back), plus
    ``charged`` (CPU seconds qobs spent in bursts, on its own clocks: ``Meter.charged``) as a share of the plain
    blocks' CPU."""
    core, lo, hi = paired_ratio(plain, instr, cut=TRIM, level=level, draws=draws, seed=seed)
    share = charged / sum(plain)
    return core + share, lo + share, hi + share


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

    def collect(self, generation: int = 2) -> None:
        with self.explicit():
            gc.collect(generation)

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


class Meter:
    """Times blocks of calls for ``charged_ratio``: per block its own CPU (process CPU less qobs's threads' and
    less the full-GC pauses inside it) and wall time; per workload, what is charged to qobs in full."""

    def __init__(self, generation: int = 2) -> None:
        self.full = FullCollections()
        self.generation = generation  # of the untimed collection that starts each block
        self.burst = 0.0  # CPU seconds of qobs's bursts in instrumented blocks: see ``block``

    def start(self) -> None:
        """A workload starts."""
        self.full.count.clear()
        self.full.pause.clear()
        self.burst = 0.0

    def block(self, fn: Callable[[], object], calls: int, variant: str,
              flush: Callable[[], object] | None = None, *, warm: bool = True) -> tuple[float, float]:
        """(own CPU, wall) seconds of ``calls`` calls of ``fn``, after one untimed call and an untimed collection
        (``generation``), both sides alike: the garbage of switching the patches (what a real program
        allocates once) is not left to age into the old generation, where it would trigger full collections
        inside the next blocks. A full collection walks the SDK's whole heap (78 ms for Qiskit's here): a
        script whose blocks see no full collection inside them after a young one may choose that.

        ``flush`` (an instrumented block): it ends the block, recording and committing what the block left;
        then qobs's threads' CPU in the block and the flush's CPU go to ``burst``. A plain block's share of the
        threads' CPU (their idle rounds) is charged to nobody. ``warm=False``: no untimed call first."""
        if warm:
            fn()
        self.full.collect(self.generation)
        self.full.variant = variant
        pause0 = self.full.pause.get(variant, 0.0)
        threads0 = qobs_threads_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        wall = time.perf_counter() - t0
        flushed = 0.0
        if flush is not None:
            f0 = time.thread_time()
            flush()
            flushed = time.thread_time() - f0
        cpu = time.process_time() - c0
        threads = qobs_cpu_since(threads0)
        cpu -= threads + flushed + self.full.pause.get(variant, 0.0) - pause0
        if flush is not None:
            self.burst += threads + flushed
        self.full.variant = ""
        return cpu, wall

    def charged(self, qobs_variant: str, plain_variant: str) -> float:
        """CPU seconds to charge to qobs in full for the workload: its bursts, and the full-GC pauses of
        ``qobs_variant`` blocks beyond those of ``plain_variant`` blocks (equally many calls)."""
        return self.burst + self.gc_extra(qobs_variant, plain_variant)

    def gc_extra(self, variant: str, plain_variant: str) -> float:
        """The full-GC pauses of ``variant`` blocks beyond those of ``plain_variant`` blocks, CPU seconds."""
        return self.full.pause.get(variant, 0.0) - self.full.pause.get(plain_variant, 0.0)
