"""Instrumentation overhead on the whole QGAN training: instrumented vs plain, side by side (goal <= 3 %).

Plain: no ``qobs.instrument()`` and no training hooks. Instrumented: the adapters observe every job
and ``qobs.training`` records every step into a fresh store. The two run in separate child processes
(instrumentation patches the SDK process-wide), alternating, ``--pairs`` times; the median CPU times
are compared (CPU time, because wall time on a shared machine mostly measures the neighbours).

    OMP_NUM_THREADS=1 python benchmarks/bench_qgan_overhead.py [--epochs 150] [--pairs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

CHILD = r"""
import json, os, sys, time
mode, epochs, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if mode == "instrumented":
    import qobs
    qobs.configure(store=store)
    qobs.instrument()
from reference_qgan.train import TrainConfig, train
import qiskit_aer, qiskit  # noqa: imports outside the timing
train(TrainConfig(epochs=3, seed=0), telemetry=(mode == "instrumented"))  # warm-up (caches, first job)
t0, c0 = time.perf_counter(), time.process_time()
train(TrainConfig(epochs=epochs, seed=0), telemetry=(mode == "instrumented"))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
if mode == "instrumented":
    qobs.shutdown()
print(json.dumps({"wall": wall, "cpu": cpu}))
"""


def _once(mode: str, epochs: int, store: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QOBS_", "OTEL_"))}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(epochs), store], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()
    plain, inst = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pairs):
            order = ("plain", "instrumented") if i % 2 == 0 else ("instrumented", "plain")
            for mode in order:
                r = _once(mode, args.epochs, os.path.join(tmp, f"runs{i}.db"))
                (plain if mode == "plain" else inst).append(r)
                print(f"pair {i + 1} {mode:<12} {r['wall']:.2f} s wall  {r['cpu']:.2f} s CPU", flush=True)
    p_cpu, i_cpu = statistics.median(r["cpu"] for r in plain), statistics.median(r["cpu"] for r in inst)
    p_wall, i_wall = statistics.median(r["wall"] for r in plain), statistics.median(r["wall"] for r in inst)
    over_cpu, over_wall = (i_cpu / p_cpu - 1) * 100, (i_wall / p_wall - 1) * 100
    print(f"median CPU: plain {p_cpu:.2f} s, instrumented {i_cpu:.2f} s -> overhead {over_cpu:+.1f} %")
    print(f"median wall: plain {p_wall:.2f} s, instrumented {i_wall:.2f} s -> overhead {over_wall:+.1f} %")
    return 0 if over_cpu <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
