"""Per-job cost of the qobs pipeline itself (start_job + finish_job), the floor under every adapter.

Prints microseconds per job for: metrics + store (the default), and with tracing to an OTLP
endpoint (spans batched, exporter pointed at a closed port so only the SDK cost is measured).
Run: python benchmarks/bench_core.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent("""
    import statistics, sys, time
    import qobs
    from qobs import telemetry
    qobs.instrument()
    samples = []
    for rep in range(15):
        t = time.perf_counter()
        for i in range(2000):
            h = telemetry.start_job("sampler", "aer_simulator", "aer", shots_requested=1024)
            r = h.record
            r.shots, r.circuits = 1024, 1
            r.stats = [telemetry.CircuitStats(4, 20, 9)]
            telemetry.finish_job(h)
        samples.append((time.perf_counter() - t) / 2000 * 1e6)
    print(statistics.median(samples))
""")


def measure(env_extra: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QOBS_", "OTEL_"))}
        env.update({"QOBS_STORE": f"{d}/runs.db", "QOBS_ADAPTERS": "none", **env_extra})
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip())


def main() -> None:
    cases = {
        "metrics only (store off)": {"QOBS_STORE": "off"},
        "metrics + store (default)": {},
        "metrics + store + OTLP spans": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                                         "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
    }
    results: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(3):  # interleave the cases so machine noise hits them alike
        for name, env in cases.items():
            results[name].append(measure(env))
    for name, vals in results.items():
        print(f"{name:<32} {statistics.median(vals):7.1f} us/job")


if __name__ == "__main__":
    main()
