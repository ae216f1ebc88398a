"""Submit guards (budgets) seen from the Qiskit adapter: a refusal and a reroute to a fallback backend."""

from __future__ import annotations

import json
import sqlite3

import pytest

import qobs
from qobs import telemetry

pytest.importorskip("qiskit_aer")

from qiskit.primitives import BackendSamplerV2, StatevectorSampler
from qiskit.providers.basic_provider import BasicSimulator
from qiskit_aer import AerSimulator

from tests.adapters.test_qiskit_jobs import ansatz


@pytest.fixture
def guard():
    """Register a guard for one test: ``guard.use(fn)``."""
    registered = []

    class G:
        def use(self, fn):
            telemetry.add_submit_guard(fn)
            registered.append(fn)

    yield G()
    for fn in registered:
        telemetry.remove_submit_guard(fn)


def rows(store, table: str = "jobs") -> list[sqlite3.Row]:
    qobs.flush()
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_refused_submission_is_recorded_and_reraised_unchanged(qobs_run, guard, metric):
    refusal = telemetry.SubmissionRefused("shot budget exhausted")
    seen: list[telemetry.SubmitRequest] = []

    def block(req):
        seen.append(req)
        raise refusal

    guard.use(block)
    sim = AerSimulator(max_parallel_threads=1)
    ran = []
    original = AerSimulator._execute_circuits_job
    AerSimulator._execute_circuits_job = lambda *a, **k: ran.append(1) or original(*a, **k)
    b0 = metric("qobs_submission_errors_total", backend="aer_simulator", provider="aer", reason="budget")
    jobs = {s: metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run", status=s)
            for s in ("blocked", "error")}
    try:
        with pytest.raises(telemetry.SubmissionRefused) as info:
            sim.run(ansatz().assign_parameters([0.1] * 6), shots=321)
    finally:
        AerSimulator._execute_circuits_job = original
    assert info.value is refusal and ran == []
    assert (seen[0].operation, seen[0].backend, seen[0].shots, seen[0].circuits) == ("backend_run", "aer_simulator",
                                                                                     321, 1)
    assert metric("qobs_submission_errors_total", backend="aer_simulator", provider="aer", reason="budget") - b0 == 1
    # Blocked by the user's own budget: not an error of the job (no job-success error budget burns for it).
    assert {s: metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run", status=s)
            - n for s, n in jobs.items()} == {"blocked": 1, "error": 0}
    r = rows(qobs_run)[-1]
    assert (r["status"], r["submission_reason"], r["error_type"], r["shots"]) == ("blocked", "budget",
                                                                                  "SubmissionRefused", None)


def test_fallback_reroutes_backend_run_and_backend_sampler(qobs_run, guard):
    fallback = BasicSimulator()
    guard.use(lambda req: telemetry.SubmitDecision(fallback=fallback, fallback_name=fallback.name,
                                                   reason="money budget") if req.backend == "aer_simulator" else None)
    sim = AerSimulator(max_parallel_threads=1)
    qc = ansatz().assign_parameters([0.2] * 6)
    result = sim.run(qc, shots=50, seed_simulator=3).result()
    assert result.backend_name == "basic_simulator"  # it ran on the fallback
    res2 = BackendSamplerV2(backend=sim).run([qc], shots=40).result()
    assert sum(res2[0].data.meas.get_counts().values()) == 40
    jobs = rows(qobs_run)
    assert sorted((j["backend"], j["provider"], j["operation"], j["shots"]) for j in jobs) == [
        ("basic_simulator", "qiskit", "backend_run", 50), ("basic_simulator", "qiskit", "sampler", 40)]
    for j in jobs:
        attrs = json.loads(j["attrs"])
        assert attrs["qobs.fallback.requested_backend"] == "aer_simulator"
        assert attrs["qobs.fallback.reason"] == "money budget"
    events = rows(qobs_run, "events")
    assert [(e["kind"], e["subject"]) for e in events] == [("budget_fallback", "aer_simulator")] * 2


def test_fallback_on_a_primitive_without_backend_is_recorded_as_unsupported(qobs_run, guard):
    guard.use(lambda req: telemetry.SubmitDecision(fallback=BasicSimulator(), reason="r"))
    res = StatevectorSampler(seed=1).run([ansatz().assign_parameters([0.3] * 6)], shots=16).result()
    assert sum(res[0].data.meas.get_counts().values()) == 16
    j = rows(qobs_run)[-1]
    assert j["backend"] == "statevector" and json.loads(j["attrs"]) == {"qobs.fallback.unsupported": True}
