"""The simulated remote QPU as a PennyLane device: measurements, bit order, faults, one record per job."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

qml = pytest.importorskip("pennylane")
pytest.importorskip("qiskit_ibm_runtime")

from qobs.sim.pennylane import SimulatedQPUDevice  # noqa: E402 - after the importorskip


def test_bit_order_and_measurements_from_counts(qobs_run):
    dev = SimulatedQPUDevice(wires=3, seed=4, time_scale=0.0)

    @qml.qnode(dev, shots=3000)
    def f():
        qml.PauliX(wires=0)  # |100> in PennyLane's order (first wire first)
        return qml.probs(wires=[0, 1, 2]), qml.expval(qml.PauliZ(0)), qml.expval(qml.PauliZ(2))

    probs, z0, z2 = f()
    assert np.argmax(probs) == 4 and probs[4] > 0.75  # noisy (FakeManila errors), but clearly |100>
    assert z0 < -0.7 and z2 > 0.7


def test_expectations_match_the_ideal_within_noise(qobs_run):
    dev = SimulatedQPUDevice(wires=2, seed=1, time_scale=0.0)

    @qml.qnode(dev, shots=8000)
    def f(x):
        qml.RY(x, wires=0)
        qml.CNOT(wires=[0, 1])
        return qml.expval(qml.PauliZ(0) @ qml.PauliZ(1)), qml.expval(qml.PauliX(0) @ qml.PauliX(1))

    zz, xx = f(0.9)
    # cos(.45)|00> + sin(.45)|11>: ideal <ZZ> = 1 and <XX> = sin(0.9); noise pulls both towards 0 a little
    assert 0.8 < zz <= 1.0
    assert abs(xx - np.sin(0.9)) < 0.15


def test_each_execution_is_recorded_once_and_priced(qobs_run, metric):
    dev = SimulatedQPUDevice(wires=1, seed=2, time_scale=0.0)
    labels = {"backend": "sim_manila", "provider": "pennylane"}
    jobs0 = metric("qobs_jobs_total", **labels, operation="device_execute", status="ok")
    inner0 = metric("qobs_jobs_total", backend="sim_manila", provider="qobs.sim", operation="backend_run",
                    status="ok")
    cost0 = metric("qobs_cost_usd_total", backend="sim_manila", source="catalog")

    @qml.qnode(dev, shots=500, diff_method="parameter-shift")
    def f(x):
        qml.RX(x, wires=0)
        return qml.expval(qml.PauliZ(0))

    qml.grad(f)(qml.numpy.array(0.3, requires_grad=True))  # forward + 2 shifted circuits
    executed = metric("qobs_jobs_total", **labels, operation="device_execute", status="ok") - jobs0
    assert executed >= 1
    assert metric("qobs_jobs_total", backend="sim_manila", provider="qobs.sim", operation="backend_run",
                  status="ok") == inner0  # the inner Qiskit job is not recorded a second time
    circuits = 3
    expected = Decimal("0.10") * circuits + Decimal("0.0005") * 500 * circuits  # the catalog's sim_* price
    assert metric("qobs_cost_usd_total", backend="sim_manila", source="catalog") - cost0 == pytest.approx(
        float(expected))


def test_device_faults_reach_the_user_and_are_recorded(qobs_run, metric):
    from qiskit.providers import JobError

    dev = SimulatedQPUDevice(wires=1, seed=3, failure_rate=1.0, time_scale=0.0)

    @qml.qnode(dev, shots=100)
    def f():
        qml.Hadamard(wires=0)
        return qml.expval(qml.PauliZ(0))

    errors0 = metric("qobs_jobs_total", backend="sim_manila", provider="pennylane", operation="device_execute",
                     status="error")
    with pytest.raises(JobError, match="simulated fault"):
        f()
    assert metric("qobs_jobs_total", backend="sim_manila", provider="pennylane", operation="device_execute",
                  status="error") - errors0 == 1


def test_analytic_execution_is_refused_clearly():
    dev = SimulatedQPUDevice(wires=1, seed=0, time_scale=0.0)

    @qml.qnode(dev)
    def f():
        return qml.expval(qml.PauliZ(0))

    from qobs.sim.pennylane import DeviceError

    with pytest.raises(DeviceError, match="analytic"):  # a QPU samples: say so before anything runs
        f()
