"""Circuit parameters and measured counts are recorded only when the user turns that on."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

import qobs
from qobs.contract import Attr

pytest.importorskip("qiskit_aer")


def _attrs(store) -> list[dict]:
    qobs.flush()
    conn = sqlite3.connect(store)
    return [json.loads(a) if a else {} for (a,) in conn.execute("SELECT attrs FROM jobs ORDER BY id")]


def _qiskit_job() -> tuple[np.ndarray, dict[str, int]]:
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit_aer.primitives import SamplerV2

    p = ParameterVector("t", 2)
    qc = QuantumCircuit(2)
    qc.ry(p[0], 0)
    qc.rx(p[1], 1)
    qc.cx(0, 1)
    qc.measure_all()
    values = np.array([0.25, 1.5])
    res = SamplerV2(seed=3, options={"backend_options": {"max_parallel_threads": 1}}).run(
        [(qc, values)], shots=200).result()
    return values, res[0].data.meas.get_counts()


def test_nothing_is_recorded_by_default(qobs_run):
    _qiskit_job()
    (a,) = _attrs(qobs_run)
    assert Attr.PARAMETERS not in a and Attr.COUNTS not in a


def test_parameters_and_counts_when_turned_on(qobs_run):
    qobs.configure(record_parameters=True, record_results=True)
    values, counts = _qiskit_job()
    (a,) = _attrs(qobs_run)
    assert json.loads(a[Attr.PARAMETERS]) == [pytest.approx(list(values))]
    assert json.loads(a[Attr.COUNTS]) == [counts]


def test_pennylane_tape_parameters_when_turned_on(qobs_run):
    qml = pytest.importorskip("pennylane")
    qobs.configure(record_parameters=True)
    dev = qml.device("default.qubit", wires=1)

    @qml.qnode(dev)
    def f(x):
        qml.RX(x, wires=0)
        qml.RY(0.5, wires=0)
        return qml.expval(qml.PauliZ(0))

    f(0.3)
    (a,) = _attrs(qobs_run)
    assert json.loads(a[Attr.PARAMETERS]) == [pytest.approx([0.3, 0.5])]
