"""Overhead of the Qiskit adapter: the same workloads plain and instrumented, side by side.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_qiskit.py [--seconds S] [--block B]``. Plain and instrumented
blocks alternate in one process (A B, then B A; the adapter's patches are switched on and off between blocks,
the pipeline stays up with its store, metrics and job listeners) until each workload's time budget is spent, at
least 10 pairs. Each block starts with one untimed job and an untimed collection of the young GC generations
(no full collection happened inside blocks after it; a full one costs 78 ms of Qiskit's heap); each
instrumented block ends by recording and committing what it left (``qobs.flush()``, charged to it).

A block lasts one round of qobs's recorder (0.25 s of plain work by default), so that the flush that ends it
costs what a round costs a running program. A batch's recording gets cheaper per job as it grows (its code
and data are cold after the simulator's work: measured here per Aer job, recording and committing 20, 66 and
160 jobs cost 47, 22 and 14 us a job): shorter blocks would charge a round's fixed cost more often than a
program pays it. The flush still commits once a block, twice as often as the store's writer does.

The estimate (``_ratio.Meter`` and ``_ratio.charged_ratio``, whose docstring says why): the interquartile
mean of the per-pair ratios of the program's own CPU (process CPU less qobs's threads' and less full-GC
pauses), plus, charged in full, qobs's threads' CPU in the instrumented blocks, the flush that ends each of
them and any extra full-GC pauses, as a share of the plain CPU; with a 95 % bootstrap interval over pairs.
The verdict is ``met`` only when the whole interval is at or under the target, ``missed`` when it is all
above it, else ``inconclusive``; the exit status is 0 only when every workload is met. Printed beside: the
added CPU per job, split into the program's threads and qobs's, and the wall-clock ratio of sums with its
interval (qobs's threads run on another core when there is one: wall time is what the user waits).
``--null`` runs both arms plain (an A/A run): the true ratio is 1, so its intervals are the resolution of
the machine at the time; a target can be shown met only when an interval that wide fits under it.
Targets: ratio <= 1.03 for a 4-qubit, 3-layer circuit at 1024 shots on Aer (backend.run and SamplerV2,
single job), <= 1.02 for a 100-binding SamplerV2 job.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable

from _ratio import Block, Meter, alternate, judge, ratio_ci

os.environ.setdefault("OMP_NUM_THREADS", "1")


def circuit(n: int = 4, layers: int = 3):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    p = ParameterVector("t", n * layers)
    qc = QuantumCircuit(n)
    for layer in range(layers):
        for q in range(n):
            qc.ry(p[layer * n + q], q)
        for q in range(n - 1):
            qc.cx(q, q + 1)
    qc.measure_all()
    return qc


def workloads() -> dict[str, tuple[Callable[[], object], float, float]]:
    """name -> (one job, target ratio, its share of the time budget: 35 s of 95 for each single job)."""
    import numpy as np
    from qiskit import transpile
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    qc = circuit()
    rng = np.random.default_rng(0)
    sim = AerSimulator(max_parallel_threads=1, seed_simulator=1)
    bound = transpile(qc.assign_parameters(rng.random(qc.num_parameters)), sim)
    sampler = SamplerV2(seed=1, options={"backend_options": {"max_parallel_threads": 1}})
    vals = rng.random((100, qc.num_parameters))
    return {
        "backend.run 4q3l 1024 shots": (lambda: sim.run(bound, shots=1024).result(), 1.03, 35.0),
        "SamplerV2 4q3l 1024 shots": (lambda: sampler.run([bound], shots=1024).result(), 1.03, 35.0),
        "SamplerV2 100 bindings": (lambda: sampler.run([(qc, vals)], shots=1024).result(), 1.02, 25.0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=95.0, help="time budget, shared by the workloads (at least 10 "
                    "pairs each)")
    ap.add_argument("--block", type=float, default=None, help="seconds of plain work per block (default: one round "
                    "of the recorder, 0.25 s)")
    ap.add_argument("--null", action="store_true", help="an A/A run: both arms plain, so the true ratio is 1 and "
                    "the intervals show how fine a difference this machine can resolve now")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for var in [v for v in os.environ if v.startswith(("QOBS_", "OTEL_"))]:
        del os.environ[var]  # the defaults: an exporter's threads would not be counted as qobs's

    import qobs
    from qobs import instrumentation, telemetry

    store = os.path.join(tempfile.mkdtemp(prefix="qobs-bench-"), "runs.db")
    qobs.configure(store=store)
    qobs.instrument()
    work = workloads()
    meter = Meter(generation=1)  # a full collection costs 78 ms here, and none happened inside blocks without
    t_start = time.perf_counter()
    ok = True
    print(f"{'workload':<28} {'plain CPU ms':>12} {'ratio':>6} {'95% CI':>11} {'target':>6}  {'verdict':<12}"
          f"  added CPU us/job: program + qobs threads and flush   wall ratio (95% CI)")
    block_s = args.block if args.block is not None else telemetry._Recorder.INTERVAL_S
    for name, (job, target, share) in work.items():
        for _ in range(3):
            job()  # warm both paths' caches
        instrumentation.uninstrument()
        t0 = time.perf_counter()
        for _ in range(5):
            job()
        reps = max(1, round(block_s / ((time.perf_counter() - t0) / 5)))  # jobs per block
        meter.start()

        def block(on: bool, pair: int, job: Callable[[], object] = job, reps: int = reps, name: str = name) -> Block:
            if on and not args.null:
                instrumentation.instrument()
            else:
                instrumentation.uninstrument()
            return meter.block(job, reps, f"{name}:{on}", qobs.flush if on and not args.null else None)

        plain, instr = alternate(block, args.seconds * share / 95.0)
        blocks = {False: plain, True: instr}
        r = len(plain)
        instrumentation.instrument()
        wall = {on: [b.wall for b in blocks[on]] for on in blocks}
        ratio, lo, hi, said = judge(blocks[False], blocks[True], target)
        wlo, whi = ratio_ci(wall[False], wall[True])
        ok &= said == "met"
        jobs = r * reps
        p = sum(b.own for b in blocks[False]) / jobs
        threads_us = meter.burst / jobs * 1e6
        own_us = (ratio - 1) * p * 1e6 - threads_us
        gcs = "/".join(str(meter.full.count.get(f"{name}:{on}", 0)) for on in (False, True))
        wr = sum(wall[True]) / sum(wall[False])
        print(f"{name:<28} {p * 1e3:>12.3f} {ratio:>6.3f} {lo:>5.3f}-{hi:<5.3f} {target:>6.2f}  {said:<12}"
              f"  {own_us:>6.1f} + {threads_us:<6.1f}{'':34}{wr:.3f} ({wlo:.3f}-{whi:.3f});"
              f"  {r} pairs x {reps} jobs, full GCs in blocks plain/qobs {gcs}")
    qobs.uninstrument()
    what = "A/A run (both arms plain)" if args.null else "all targets met" if ok else "not all targets met"
    print(f"total {time.perf_counter() - t_start:.1f} s; {what}")
    return 0 if ok or args.null else 1


if __name__ == "__main__":
    raise SystemExit(main())
