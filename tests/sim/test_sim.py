"""The simulated remote QPU: async jobs, queue timestamps, faults, credentials, drift and calibration events."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime

import pytest
from qiskit.providers import JobError, JobStatus

import qobs
from qobs import calibration, fidelity
from qobs.sim import CredentialsExpiredError, JobCancelledError, SimulatedQPU


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def test_jobs_are_async_with_measurable_queue_time():
    qpu = SimulatedQPU(seed=1, queue_mean_s=300.0, queue_distribution="fixed", time_scale=0.001)  # 0.3 s
    job = qpu.run(fidelity.reference_circuit(), shots=256)
    assert job.status() == JobStatus.QUEUED
    counts = job.result().get_counts()
    assert job.status() == JobStatus.DONE and sum(counts.values()) == 256
    ts = job.metrics()["timestamps"]
    queue_s = _ts(ts["running"]) - _ts(ts["created"])
    assert queue_s >= 0.29 and _ts(ts["finished"]) >= _ts(ts["running"])  # no upper bound: a busy machine is slow
    assert job.metrics()["usage"]["quantum_seconds"] > 0


def test_cancel_a_queued_job():
    qpu = SimulatedQPU(seed=1, queue_mean_s=5.0, queue_distribution="fixed")
    job = qpu.run(fidelity.reference_circuit(), shots=64)
    assert job.cancel() is True and job.status() == JobStatus.CANCELLED
    with pytest.raises(JobCancelledError):
        job.result()


@pytest.mark.parametrize(("kw", "status", "exc"), [({"failure_rate": 1.0}, JobStatus.ERROR, JobError),
                                                   ({"cancel_rate": 1.0}, JobStatus.CANCELLED, JobCancelledError)])
def test_device_faults(kw, status, exc):
    job = SimulatedQPU(seed=2, **kw).run(fidelity.reference_circuit(), shots=64)
    with pytest.raises(exc):
        job.result(timeout=30)
    assert job.status() == status


def test_fault_rates_are_seeded():
    def outcomes(seed: int) -> list[str]:
        qpu = SimulatedQPU(seed=seed, failure_rate=0.3, cancel_rate=0.2, queue_mean_s=60, queue_distribution="fixed")
        jobs = [qpu.run(fidelity.reference_circuit(), shots=8) for _ in range(30)]
        for j in jobs:  # outcomes are drawn at submission; nothing needs to run
            j.cancel()
        return [j._outcome for j in jobs]

    a = outcomes(5)
    assert a == outcomes(5) and a != outcomes(6) and {"ok", "fail", "cancel"} == set(a)


def test_credentials_expire():
    qpu = SimulatedQPU(seed=1, credential_ttl_s=1.0)
    qpu.run(fidelity.reference_circuit(), shots=8).result()
    time.sleep(1.05)
    with pytest.raises(CredentialsExpiredError, match="credentials expired"):
        qpu.run(fidelity.reference_circuit(), shots=8)
    qpu.renew_credentials()
    qpu.run(fidelity.reference_circuit(), shots=8).result()


def test_credential_failure_is_recorded_as_a_submission_error(qobs_run, metric):
    qpu = SimulatedQPU(seed=1)
    qpu.expire_credentials()
    before = metric("qobs_submission_errors_total", backend="sim_manila", provider="qobs.sim", reason="credentials")
    with pytest.raises(CredentialsExpiredError):
        fidelity.probe(qpu)
    assert metric("qobs_submission_errors_total", backend="sim_manila", provider="qobs.sim",
                  reason="credentials") == before + 1


def test_results_are_reproducible():
    def run(seed: int) -> dict:
        qpu = SimulatedQPU(seed=seed)
        return qpu.run(fidelity.reference_circuit(), shots=512).result().get_counts()

    assert run(4) == run(4) != run(5)


def test_drift_steps_scale_errors_and_divide_t1():
    qpu = SimulatedQPU(seed=1, drift_every_jobs=1, max_drift_steps=2)
    s0 = calibration.snapshot(qpu)
    for _ in range(3):
        qpu.run(fidelity.reference_circuit(), shots=8).result()
    s2 = calibration.snapshot(qpu)
    assert qpu.drift_step == 2 and qpu.error_scale == 4.0
    assert s2.readout_error == pytest.approx(4 * s0.readout_error)
    assert s2.two_qubit_error == pytest.approx(4 * s0.two_qubit_error)
    assert s2.t1_s == pytest.approx(s0.t1_s / 4)


def test_calibration_age_and_change_events_match_the_device(qobs_run, metric):
    qpu = SimulatedQPU(seed=1, calibration_age_s=3600.0, drift_every_jobs=2)
    for _ in range(5):  # the calibration advances when the 2nd and 4th jobs start running
        before = time.time()
        qpu.run(fidelity.reference_circuit(), shots=64).result()
        after = time.time()
    # Recorded later than the jobs ended: the age must still be the one at the job's end. A simulated QPU's job
    # has metrics() (may block, as an IBM job's): a scrape leaves it to the recorder's thread, which rounds every
    # 0.25 s, so the test flushes rather than sleeping (0.2 s was shorter than a round: CI read job 4's age).
    qobs.flush()
    assert [s for _, s in qpu.calibration_history] == [0, 1, 2]
    age = metric("qobs_calibration_age_seconds", backend="sim_manila")
    assert before - qpu.calibration_time <= age <= after - qpu.calibration_time  # taken at run time
    snap = calibration.snapshot(qpu)
    assert metric("qobs_backend_readout_error", backend="sim_manila") == pytest.approx(snap.readout_error)
    assert metric("qobs_backend_t2_seconds", backend="sim_manila") == pytest.approx(snap.t2_s)
    qobs.flush()
    conn = sqlite3.connect(qobs_run)
    rows = [(k, json.loads(d)) for k, d in
            conn.execute("SELECT kind, data FROM events WHERE kind LIKE 'calibration%' ORDER BY id")]
    assert [k for k, _ in rows] == ["calibration_snapshot", "calibration_change", "calibration_change"]
    assert rows[0][1]["last_update"] == pytest.approx(qpu.calibration_history[0][0])
    assert [d["last_update"] for _, d in rows[1:]] == pytest.approx([t for t, _ in qpu.calibration_history[1:]])
    assert rows[2][1]["readout_error"] == pytest.approx(2 * rows[1][1]["readout_error"])


def test_a_job_recorded_after_a_later_one_does_not_set_back_the_calibration(qobs_run, metric):
    """Jobs can be recorded out of order (the poller settles one while the user's thread records the next):
    a job that ended before one already observed must not put its older calibration back in the gauges nor
    record a change event back to it (CI saw the age gauge set back so)."""
    qpu = SimulatedQPU(seed=1, calibration_age_s=3600.0)
    old = calibration.snapshot(qpu)
    t_old = time.time()
    qpu.set_drift(1)  # recalibrated: errors double
    new = calibration.snapshot(qpu)
    assert new.readout_error == pytest.approx(2 * old.readout_error)
    calibration.observe(qpu, "sim_manila", t_old + 10.0, new)  # the later job, recorded first
    calibration.observe(qpu, "sim_manila", t_old, old)  # the earlier one, recorded after it
    assert metric("qobs_calibration_age_seconds", backend="sim_manila") == pytest.approx(new.age(t_old + 10.0))
    assert metric("qobs_backend_readout_error", backend="sim_manila") == pytest.approx(new.readout_error)
    qobs.flush()
    kinds = [k for (k,) in sqlite3.connect(qobs_run).execute(
        "SELECT kind FROM events WHERE kind LIKE 'calibration%' ORDER BY id")]
    assert kinds == ["calibration_snapshot"]


def test_price_is_in_the_catalog(qobs_run):
    e = qobs.estimate(fidelity.reference_circuit(), 1000, SimulatedQPU(seed=0))
    assert str(e.amount) == "0.6000" and e.source == "estimate"
