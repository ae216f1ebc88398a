"""One of several processes sharing a store: declares a budget and records jobs against it."""

from __future__ import annotations

import sys
import time

import qobs
from qobs import telemetry

store, jobs, shots, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
qobs.configure(store=store, flush_interval=0.05)
qobs.instrument()
qobs.budget("shared", shots=1000, scope={"backend": "sim_*"})
time.sleep(max(start_at - time.time(), 0))
for _ in range(jobs):
    h = telemetry.start_job("backend_run", "sim_manila", "qobs.sim", circuits=1, shots=shots)
    telemetry.finish_job(h)
qobs.shutdown()
