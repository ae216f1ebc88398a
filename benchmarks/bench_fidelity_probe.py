"""Added wall time of the fidelity probe at the default sampling fraction on a QGAN-like workload.

A 3-qubit parameterised generator circuit, 1024 shots, fresh parameters every job (so the ideal-
distribution cache does not help), run through Aer's SamplerV2 with a depolarising noise model
(jobs of noiseless simulators are never probed) under ``qobs.instrument()``.
Rounds of ``--jobs`` jobs alternate probe off (``fidelity_sample=0``) and on (default 0.02, or
``--sample``); the medians are compared. Target: at most 5 % extra wall time.

    OMP_NUM_THREADS=1 python benchmarks/bench_fidelity_probe.py [--jobs 300] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--sample", type=float, default=None, help="fraction probed (default: the setting's default)")
    args = ap.parse_args()

    import numpy as np

    import qobs
    from qobs import config, fidelity

    default_sample = config.Settings().fidelity_sample
    sample = default_sample if args.sample is None else args.sample
    store = os.path.join(tempfile.mkdtemp(prefix="qobs-bench-"), "runs.db")
    qobs.configure(store=store)
    qobs.instrument()

    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit_aer.noise import NoiseModel, depolarizing_error
    from qiskit_aer.primitives import SamplerV2

    theta = ParameterVector("t", 6)
    qc = QuantumCircuit(3)
    for i in range(3):
        qc.ry(theta[i], i)
    qc.cx(0, 1)
    qc.cx(1, 2)
    for i in range(3):
        qc.ry(theta[3 + i], i)
    qc.measure_all()
    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.002, 1), ["ry", "sx", "x"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.02, 2), ["cx"])
    sampler = SamplerV2(seed=1, options={"backend_options": {"max_parallel_threads": 1, "noise_model": noise}})
    rng = np.random.default_rng(7)
    checks = {"n": 0}

    def round_(frac: float) -> float:
        qobs.configure(fidelity_sample=frac)
        before = _checks()
        t0 = time.perf_counter()
        for _ in range(args.jobs):
            sampler.run([(qc, rng.uniform(0, np.pi, 6))], shots=1024).result()
        fidelity.flush()
        dt = time.perf_counter() - t0
        checks["n"] += _checks() - before if frac == sample else 0
        return dt

    def _checks() -> float:
        from prometheus_client import REGISTRY

        total = 0.0
        for m in REGISTRY.collect():
            if m.name == "qobs_fidelity_checks":
                total += sum(s.value for s in m.samples if s.name.endswith("_total"))
        return total

    round_(0.0)  # warm up imports and caches
    off, on = [], []
    for _ in range(args.rounds):
        off.append(round_(0.0))
        on.append(round_(sample))
    full = [round_(1.0) for _ in range(2)]  # every job checked: the per-check cost, for extrapolation
    m_off, m_on = statistics.median(off), statistics.median(on)
    pair = statistics.median(b / a for a, b in zip(off, on, strict=True))
    per_check = (statistics.median(full) - m_off) / args.jobs
    print(f"workload: 3-qubit generator, 1024 shots, {args.jobs} jobs/round, {args.rounds} rounds, "
          "Aer SamplerV2 with depolarising noise")
    print(f"probe off: median {m_off:.3f} s ({m_off / args.jobs * 1e3:.2f} ms/job)")
    print(f"probe on (sample {sample:g}): median {m_on:.3f} s ({m_on / args.jobs * 1e3:.2f} ms/job), "
          f"{checks['n']:.0f} checks")
    print(f"added wall time: {(m_on / m_off - 1) * 100:+.1f} % of medians, {(pair - 1) * 100:+.1f} % median of "
          f"paired rounds (target <= 5 %)")
    print(f"every job checked: +{per_check * 1e3:.2f} ms/job; extrapolated at {sample:g}: "
          f"{per_check * sample / (m_off / args.jobs) * 100:+.2f} %")
    qobs.shutdown()


if __name__ == "__main__":
    main()
