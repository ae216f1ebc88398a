"""``qobs report`` and ``qobs runs show`` on a large run: wall time and peak memory of each command.

A run of simulator jobs at 1000 jobs/s holds 3.6 million job rows after an hour; the commands must
aggregate them in SQLite, not load them. Builds a store of N synthetic job rows (the real schema:
one run, two backends, 0.1 % errors, a tenth priced), then runs each command as a subprocess.
Run: ``python benchmarks/bench_report.py [--jobs 1000000]``.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(path: Path, n: int) -> None:
    from qobs.store import connect
    from qobs.telemetry import JOB_COLUMNS

    conn = connect(path)
    t0 = time.time()
    conn.execute("INSERT INTO runs (run_id, name, started_at, ended_at, status) VALUES ('big', 'big', ?, ?, 'ok')",
                 (t0, t0 + n / 1000))
    rng = random.Random(0)
    blank = dict.fromkeys(JOB_COLUMNS)

    def rows():
        for i in range(n):
            hw, err = i % 10 == 0, rng.random() < 0.001
            yield tuple((blank | {
                "run_id": "big", "ts": t0 + i / 1000, "backend": "ibm_torino" if hw else "aer_simulator",
                "provider": "ibm" if hw else "aer", "operation": "backend_run", "purpose": "forward", "circuits": 1,
                "shots": 1024, "depth": 9, "width": 4, "two_qubit_gates": 3,
                "queue_s": rng.random() * 60 if hw else None,
                "execution_s": 0.0009, "duration_s": 0.001 + rng.random() * 1e-4, "status": "error" if err else "ok",
                "error_type": "AerError" if err else None, "cost": "1.6" if hw else "0", "cost_currency": "USD",
                "cost_source": "catalog"}).values())

    q = f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({','.join('?' * len(JOB_COLUMNS))})"
    conn.execute("BEGIN")
    conn.executemany(q, rows())
    conn.execute("COMMIT")
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1_000_000)
    args = ap.parse_args()
    path = Path(tempfile.mkdtemp(prefix="qobs-bench-report-")) / "runs.db"
    t = time.perf_counter()
    build(path, args.jobs)
    print(f"store of {args.jobs} jobs built in {time.perf_counter() - t:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
    for cmd in (["report", "big"], ["runs", "show", "big"], ["report", "big", "--json"]):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "import resource, runpy, sys; sys.argv = ['qobs', *sys.argv[1:]];"
                               "\ntry: runpy.run_module('qobs.cli', run_name='__main__')\nfinally: print("
                               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)",
                               *cmd, "--store", str(path)], capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(f"qobs {' '.join(cmd)} failed: {proc.stderr.strip()}")
            return 1
        peak_kib = int(proc.stderr.strip().splitlines()[-1])
        print(f"qobs {' '.join(cmd):<18} {wall:6.2f} s  peak RSS {peak_kib / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
