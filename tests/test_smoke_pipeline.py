"""The job pipeline end to end: one recorded job reaches the metrics and the store."""

from __future__ import annotations

import sqlite3

from qobs import telemetry


def test_finished_job_reaches_metrics_and_store(qobs_run, metric):
    before = metric("qobs_jobs_total", backend="b1", provider="p", operation="sampler", status="ok")
    shots_before = metric("qobs_shots_total", backend="b1", provider="p", purpose="forward")
    h = telemetry.start_job("sampler", "b1", "p", shots_requested=100)
    h.record.circuits, h.record.shots = 3, 300
    h.record.stats = [telemetry.CircuitStats(width=4, depth=12, two_qubit_gates=3)]
    telemetry.finish_job(h)
    telemetry.finish_job(h)  # a second finish is ignored
    import qobs

    qobs.flush()
    assert metric("qobs_jobs_total", backend="b1", provider="p", operation="sampler", status="ok") == before + 1
    assert metric("qobs_shots_total", backend="b1", provider="p", purpose="forward") == shots_before + 300
    rows = sqlite3.connect(qobs_run).execute("SELECT backend, circuits, shots, depth, width FROM jobs").fetchall()
    assert rows == [("b1", 3, 300, 12, 4)]
