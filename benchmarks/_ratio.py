"""Side-by-side overhead ratios for the benchmark scripts: the estimate, its uncertainty, the verdict, and
the bookkeeping that keeps qobs's own background work and the cyclic GC's pauses visible.

How the estimate is made (``Meter``, ``charged_ratio``, ``judge``). Plain and instrumented blocks of calls
alternate in one process (A B, then B A). A block's CPU is split in two:

- the program's own: process CPU less qobs's background threads' and less the full-GC pauses inside it. Its
  per-pair ratio is noisy on a shared VM in a heavy-tailed way (measured here, plain against plain: 5th to 95th
  percentile 0.76 to 1.32 at every block length from 8 ms to 0.5 s, interquartile 0.97 to 1.03). Its
  interquartile mean (``TRIM``) is the core estimate; against the mean it narrows the 95 % interval about
  2.5 times, unbiased on that symmetric noise.
- its charge, counted in full on its own clocks rather than trimmed: for an instrumented block, qobs's threads'
  CPU during it (the recorder's batches, the store's commits), the ``qobs.flush()`` that ends it (what the block
  left to record and commit) and its full-GC pauses; for a plain block, its full-GC pauses. The charges'
  difference is added as a share of the plain blocks' own CPU, pair by pair inside the bootstrap, so that its
  noise widens the interval too.

What the trimming can leave out: costs on the program's own threads that come in bursts hitting a minority of
blocks (a helper's simulation: a 10 % burst in 10 % of blocks is understated by 0.4 points). So the verdict
(``judge``) also asks a 10 %-trimmed estimate, and says ``met`` only when both intervals are at or under the
target. Two effects lean either way: the slowdown that qobs's threads, running on another core, cause to the
program's threads through shared hardware (measured ~0.4x the threads' CPU here) is in the instrumented blocks'
own CPU, partly trimmed; and the calls after a switch of the patches run with cold caches: shorter blocks gave
higher ratios (the pessimistic way, about 0.2 / k for k calls).
"""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple


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


TRIM = 0.25  # the core estimate is the interquartile mean of the per-pair ratios
CHECK_TRIM = 0.1  # the check that bursts on the program's threads were not trimmed away


class Block(NamedTuple):
    """One timed block: the program's own CPU, its wall time, and its charge (CPU seconds: ``Meter.block``)."""

    own: float
    wall: float
    charge: float


def charged_ratio(plain: Sequence[Block], instr: Sequence[Block], *, cut: float = TRIM, level: float = 0.95,
                  draws: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """The overhead ratio and its bootstrap interval over pairs (``plain[i]`` and ``instr[i]``, blocks of equally
    many calls that ran back to back): the ``cut``-trimmed mean of the per-pair ratios of the program's own CPU,
    plus the pairs' charges (instrumented less plain) as a share of the plain blocks' own CPU."""
    n = len(plain)
    if n != len(instr) or n < 2:
        raise ValueError("need two or more block pairs")
    ratios = [i.own / p.own for p, i in zip(plain, instr, strict=True)]
    extra = [i.charge - p.charge for p, i in zip(plain, instr, strict=True)]
    own = [p.own for p in plain]

    def estimate(idx: Sequence[int]) -> float:
        return trimmed_mean([ratios[k] for k in idx], cut) + sum(extra[k] for k in idx) / sum(own[k] for k in idx)

    rng = random.Random(seed)
    boot = sorted(estimate([rng.randrange(n) for _ in range(n)]) for _ in range(draws))
    lo = boot[int((1 - level) / 2 * draws)]
    hi = boot[min(int((1 + level) / 2 * draws), draws - 1)]
    return estimate(range(n)), lo, hi


def judge(plain: Sequence[Block], instr: Sequence[Block], target: float) -> tuple[float, float, float, str]:
    """(estimate, low, high, verdict): the interquartile estimate and its interval, and the verdict, ``met``
    only when the 10 %-trimmed estimate's interval is at or under the target too (if that alone stops it, the
    verdict says so, with that interval's high end)."""
    est, lo, hi = charged_ratio(plain, instr)
    check_hi = charged_ratio(plain, instr, cut=CHECK_TRIM)[2]
    said = verdict(lo, max(hi, check_hi), target)
    if said != "met" and verdict(lo, hi, target) == "met":
        said = f"inconclusive (10%-trimmed up to {check_hi:.3f})"
    return est, lo, hi, said


def alternate(block: Callable[[bool, int], Block], seconds: float, min_pairs: int = 10
              ) -> tuple[list[Block], list[Block]]:
    """Pairs of blocks, plain (``False``) and instrumented (``True``), A B then B A, until ``seconds`` are spent
    and at least ``min_pairs`` pairs ran: (plain blocks, instrumented blocks). ``block(on, pair)`` runs one."""
    plain: list[Block] = []
    instr: list[Block] = []
    t0 = time.perf_counter()
    r = 0
    while r < min_pairs or time.perf_counter() - t0 < seconds:
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            (instr if on else plain).append(block(on, r))
        r += 1
    return plain, instr


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
    """Counts the cyclic GC's full (generation 2) collections and their pauses, per variant: CPU time of the
    thread that ran them, left out when that is one of qobs's threads (its CPU is counted as theirs), when no
    variant is set (between blocks, during a flush) or when the benchmark asked for the collection itself
    (``explicit()``). The counts per variant are printed: a variant that makes full collections more frequent
    shows there."""

    def __init__(self) -> None:
        self.variant = ""
        self.count: dict[str, int] = {}
        self.pause: dict[str, float] = {}
        self._t = 0.0
        self._counting = ""
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
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._counting = "" if self._explicit or threading.current_thread().name.startswith("qobs-") \
                else self.variant
            self._t = time.thread_time()
        elif self._counting:
            v = self._counting
            self.count[v] = self.count.get(v, 0) + 1
            self.pause[v] = self.pause.get(v, 0.0) + time.thread_time() - self._t

    def per_1000(self, variant: str, calls: int) -> float:
        return round(self.count.get(variant, 0) * 1000 / max(calls, 1), 2)


class Meter:
    """Times blocks of calls for ``charged_ratio``: per block its own CPU (process CPU less qobs's threads' and
    less the full-GC pauses inside it), its wall time and its charge."""

    def __init__(self, generation: int = 2) -> None:
        self.full = FullCollections()
        self.generation = generation  # of the untimed collection that starts each block
        self.burst = 0.0  # CPU seconds of qobs's threads and flushes in instrumented blocks, for the printout

    def start(self) -> None:
        """A workload starts."""
        self.full.count.clear()
        self.full.pause.clear()
        self.burst = 0.0

    def block(self, fn: Callable[[], object], calls: int, variant: str,
              flush: Callable[[], object] | None = None, *, warm: bool = True) -> Block:
        """``calls`` calls of ``fn``, after one untimed call and an untimed collection (``generation``), both
        sides alike: the garbage of switching the patches (what a real program allocates once) is not left to
        age into the old generation, where it would trigger full collections inside the next blocks. A full
        collection walks the SDK's whole heap (78 ms for Qiskit's here): a script whose blocks see no full
        collection inside them after a young one may choose that. ``warm=False``: no untimed call first.

        ``flush`` (an instrumented block) is called after the untimed call (its job is not this block's) and
        ends the block, recording and committing what the block left; the block's charge is then qobs's
        threads' CPU in it, the flush's CPU and its full-GC pauses. A plain block's charge is its full-GC
        pauses; its share of the threads' CPU (their idle rounds) is charged to nobody. The wall time leaves
        the flush out: in a program the recording happens on the background threads."""
        if warm:
            fn()
            if flush is not None:
                flush()
        self.full.collect(self.generation)
        self.full.variant = variant
        pause0 = self.full.pause.get(variant, 0.0)
        threads0 = qobs_threads_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        wall = time.perf_counter() - t0
        self.full.variant = ""  # a collection during the flush is the flush's
        pause = self.full.pause.get(variant, 0.0) - pause0
        flushed = 0.0
        if flush is not None:
            f0 = time.thread_time()
            flush()
            flushed = time.thread_time() - f0
        cpu = time.process_time() - c0
        threads = qobs_cpu_since(threads0)
        own = cpu - threads - flushed - pause
        if flush is None:
            return Block(own, wall, pause)
        self.burst += threads + flushed
        return Block(own, wall, threads + flushed + pause)
