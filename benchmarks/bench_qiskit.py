"""Overhead of the Qiskit adapter: the same workloads plain and instrumented, side by side.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_qiskit.py [--seconds S]``. Plain and instrumented
blocks of about a quarter of a second alternate (A B, then B A; the adapter is switched on and off between
blocks, the pipeline stays up with its store, metrics and job listeners) until each workload's time budget
is spent, at least 10 pairs. Each instrumented block ends by recording and committing what it left
(``qobs.flush()``, charged to it); the CPU that qobs's background threads spend during plain blocks (their
idle rounds) is taken out of those blocks. Every block starts from a full GC collection (untimed, both sides
alike: switching the patches allocates what a real program allocates once); the full collections that
happen inside blocks are counted per side.

The estimate is the mean of the per-pair ratios of process CPU time (every thread's, so the recorder and
the store writer count), with its 95 % bootstrap interval over pairs (``_ratio.paired_ratio``). The verdict
is ``met`` only when the whole interval is at or under the target, ``missed`` when it is all above, else
``inconclusive`` (the machine's noise does not let this run tell); the exit status is 0 only when every
workload is met. Printed beside: the 10 %-trimmed mean of the pair ratios (how much of the spread is bursts
of load on one block of a pair) and the wall-clock ratio of sums with its interval.
Targets: ratio <= 1.03 for a 4-qubit, 3-layer circuit at 1024 shots on Aer (backend.run and SamplerV2,
single job), <= 1.02 for a 100-binding SamplerV2 job.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

from _ratio import FullCollections, paired_ratio, qobs_cpu_since, qobs_threads_cpu, ratio_ci, verdict

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


def workloads() -> dict[str, tuple[Callable[[], object], float, int]]:
    """name -> (one job, target ratio, repetitions per block: about a quarter of a second)."""
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
        "backend.run 4q3l 1024 shots": (lambda: sim.run(bound, shots=1024).result(), 1.03, 160),
        "SamplerV2 4q3l 1024 shots": (lambda: sampler.run([bound], shots=1024).result(), 1.03, 110),
        "SamplerV2 100 bindings": (lambda: sampler.run([(qc, vals)], shots=1024).result(), 1.02, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="time budget per workload (at least 10 pairs)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")

    import qobs
    from qobs import instrumentation

    store = os.path.join(tempfile.mkdtemp(prefix="qobs-bench-"), "runs.db")
    qobs.configure(store=store)
    qobs.instrument()
    work = workloads()
    full = FullCollections()
    t_start = time.perf_counter()
    ok = True
    print(f"{'workload':<28} {'plain CPU ms':>12} {'ratio':>6} {'95% CI':>11} {'added CPU us':>12} {'target':>6}"
          f"  verdict       trimmed  wall ratio (95% CI)  full GCs plain/qobs")
    for name, (job, target, reps) in work.items():
        for _ in range(3):
            job()  # warm both paths' caches
        # per block: (process CPU seconds, wall seconds); a qobs block's include its flush
        blocks: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        t0_work = time.perf_counter()
        r = 0
        while r < 10 or time.perf_counter() - t0_work < args.seconds:
            order = (False, True) if r % 2 == 0 else (True, False)
            for on in order:
                if on:
                    instrumentation.instrument()
                else:
                    instrumentation.uninstrument()
                job()  # the first job after a switch is not timed
                full.collect()  # nor is the garbage of switching the patches (a program patches once)
                full.variant = f"{name}:{on}"
                threads0 = qobs_threads_cpu()
                c0, t0 = time.process_time(), time.perf_counter()
                for _ in range(reps):
                    job()
                if on:  # what the block left to record and commit is its cost, not the next plain block's
                    qobs.flush()
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                if not on:
                    cpu -= qobs_cpu_since(threads0)  # the pipeline's idle rounds: not the plain program's
                full.variant = ""
                blocks[on].append((cpu, wall))
            r += 1
        cpu = {on: [b[0] for b in blocks[on]] for on in blocks}
        wall = {on: [b[1] for b in blocks[on]] for on in blocks}
        ratio, lo, hi = paired_ratio(cpu[False], cpu[True])
        trimmed = paired_ratio(cpu[False], cpu[True], cut=0.1)[0]
        wlo, whi = ratio_ci(wall[False], wall[True])
        said = verdict(lo, hi, target)
        ok &= said == "met"
        p = statistics.fmean(cpu[False]) / reps
        gcs = "/".join(str(full.count.get(f"{name}:{on}", 0)) for on in (False, True))
        print(f"{name:<28} {p * 1e3:>12.3f} {ratio:>6.3f} {lo:>5.3f}-{hi:<5.3f} {(ratio - 1) * p * 1e6:>12.1f}"
              f" {target:>6.2f}  {said:<13} {trimmed:.3f}    {sum(wall[True]) / sum(wall[False]):.3f}"
              f" ({wlo:.3f}-{whi:.3f})    {gcs}; {r} pairs x {reps} jobs")
    instrumentation.instrument()
    qobs.uninstrument()
    print(f"total {time.perf_counter() - t_start:.1f} s; {'all targets met' if ok else 'not all targets met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
