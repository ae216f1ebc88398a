"""End to end through the Qiskit adapter: the simulated QPU, priced, budgeted, probed and snapshotted."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest

import qobs
from qobs import budgets, fidelity
from qobs.budgets import BudgetExceeded


@pytest.fixture(autouse=True)
def _no_budgets():
    budgets.clear()
    yield
    budgets.clear()


def test_instrumented_backend_run_is_priced_checked_and_guarded(qobs_run, metric):
    from qobs.sim import SimulatedQPU

    qobs.configure(fidelity_sample=1.0, fidelity_baseline_checks=1)
    if "qiskit" not in qobs.instrument():
        pytest.skip("the Qiskit adapter is not installed")

    class Recording(SimulatedQPU):
        submitted = 0

        def run(self, run_input, **options):
            Recording.submitted += 1
            return super().run(run_input, **options)

    qpu = Recording(seed=3)
    qobs.budget("e2e", shots=2048, mode="block", scope={"backend": "sim_*"})
    circ = fidelity._isa(qpu, 0)
    for _ in range(2):
        qpu.run(circ, shots=1024).result()
    with pytest.raises(BudgetExceeded):
        qpu.run(circ, shots=1024)
    assert Recording.submitted == 2  # the refused job never reached the backend
    fidelity.flush()
    qobs.flush()
    conn = sqlite3.connect(qobs_run)
    rows = conn.execute("SELECT status, cost, cost_source, submission_reason FROM jobs ORDER BY id").fetchall()
    ok = [r for r in rows if r[0] == "ok"]
    assert len(ok) == 2 and all(Decimal(r[1]) == Decimal("0.612") and r[2] == "catalog" for r in ok)
    assert any(r[3] == "budget" for r in rows)
    assert metric("qobs_fidelity_checks_total", backend="sim_manila", result="pass") >= 1
    assert metric("qobs_backend_readout_error", backend="sim_manila") > 0
