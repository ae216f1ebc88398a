"""Instrumentation overhead on the whole QGAN training: instrumented vs plain, side by side (goal <= 3 %).

Plain: the adapters uninstrumented and no training hooks (``train(..., telemetry=False)``). Instrumented:
the adapters observe every job and ``qobs.training`` records every step into the store. Short trainings
(``--epochs`` each, the same seed within a pair, a new one per pair) alternate in one process, plain and
instrumented in turn (A B, then B A), until ``--seconds`` are spent; each instrumented training ends by
recording and committing what it left (``qobs.flush()``, charged to it), and each starts from a full GC
collection (untimed, both alike).

The verdict is on process CPU time (every thread's), as the trimmed mean (a tenth off each end) of the
per-pair ratios with its 95 % bootstrap interval (``_ratio.paired_ratio``): pairs ran back to back under the
same load. Separate processes per variant, as this script used to run, differed by 10-20 % between runs of
the same variant on a shared machine; the ratio of median wall times is printed beside the verdict.

    OMP_NUM_THREADS=1 python benchmarks/bench_qgan_overhead.py [--epochs 10] [--seconds 90]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings

from _ratio import paired_ratio

os.environ.setdefault("OMP_NUM_THREADS", "1")

TARGET = 1.03


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs per training (one block)")
    ap.add_argument("--seconds", type=float, default=90.0, help="time budget (at least 8 pairs)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for var in [v for v in os.environ if v.startswith(("QOBS_", "OTEL_"))]:
        del os.environ[var]

    import qobs
    from qobs import instrumentation
    from reference_qgan.train import TrainConfig, train

    qobs.configure(store=os.path.join(tempfile.mkdtemp(prefix="qobs-bench-qgan-"), "runs.db"))
    qobs.instrument()
    train(TrainConfig(epochs=3, seed=0), telemetry=True)  # warm-up: imports, caches, the first jobs
    blocks: dict[bool, list[tuple[float, float]]] = {False: [], True: []}  # (CPU s, wall s) per training
    t_start = time.perf_counter()
    r = 0
    while r < 8 or time.perf_counter() - t_start < args.seconds:
        for on in ((False, True) if r % 2 == 0 else (True, False)):
            if on:
                instrumentation.instrument()
            else:
                instrumentation.uninstrument()
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            train(TrainConfig(epochs=args.epochs, seed=r + 1), telemetry=on)
            if on:
                qobs.flush()
            blocks[on].append((time.process_time() - c0, time.perf_counter() - t0))
        r += 1
    instrumentation.instrument()
    qobs.shutdown()
    cpu = {on: [b[0] for b in blocks[on]] for on in blocks}
    ratio, lo, hi = paired_ratio(cpu[False], cpu[True])
    wall = statistics.median(b[1] for b in blocks[True]) / statistics.median(b[1] for b in blocks[False])
    plain_s = statistics.fmean(cpu[False])
    print(f"QGAN training, {args.epochs} epochs per block, {r} pairs, {time.perf_counter() - t_start:.0f} s")
    print(f"plain {plain_s:.2f} s CPU per block; instrumented/plain CPU {ratio:.3f} (95% CI {lo:.3f}-{hi:.3f});"
          f" overhead {(ratio - 1) * 100:+.1f} % (target <= {(TARGET - 1) * 100:.0f} %);"
          f" median wall ratio {wall:.3f}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
