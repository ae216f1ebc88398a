"""PennyLane adapter: every recorded figure against ground truth computed independently.

Ground truth comes from ``qml.Tracker`` (batches, executions, shots), from counting tapes (2P
parameter-shift tapes for P trainable parameters), from ``qml.specs`` (depth, wires, gate sizes)
and from running the same seeded program without instrumentation.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("pennylane")

import pennylane as qml
from pennylane import numpy as pnp

from qobs import instrumentation, telemetry
from qobs.contract import Attr
from tests.conftest import clean_env

PROVIDER = "pennylane"


class _Recorded(list):
    """Job records as the listener sees them; reading first records the jobs handed over so far
    (the adapter hands them to qobs's recorder thread)."""

    def __len__(self) -> int:
        telemetry.drain()
        return super().__len__()

    def __iter__(self):
        telemetry.drain()
        return super().__iter__()

    def __getitem__(self, i):
        telemetry.drain()
        return super().__getitem__(i)

    def __eq__(self, other: object) -> bool:
        telemetry.drain()
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]


@pytest.fixture
def jobs(qobs_run) -> Iterator[list[telemetry.JobRecord]]:
    """Finished PennyLane job records, in order."""
    out: list[telemetry.JobRecord] = _Recorded()

    def listen(rec: telemetry.JobRecord) -> None:
        if rec.provider == PROVIDER:
            out.append(rec)

    telemetry.add_job_listener(listen)
    try:
        yield out
    finally:
        telemetry.remove_job_listener(listen)


def ansatz(x, wires: int = 3) -> None:
    for i in range(len(x)):
        qml.RY(x[i], wires=i % wires)
        qml.CNOT(wires=[i % wires, (i + 1) % wires])


def with_shots(circuit, shots):
    """Shots on a QNode, in the spelling of the installed PennyLane (0.41 has no ``qml.set_shots``)."""
    if shots is None:
        return circuit
    if hasattr(qml, "set_shots"):
        return qml.set_shots(circuit, shots=shots)
    return functools.partial(circuit, shots=shots)


def qnode(dev, shots=None, **kw):
    @qml.qnode(dev, **kw)
    def circuit(x):
        ansatz(x)
        return qml.expval(qml.PauliZ(0) @ qml.PauliZ(2))

    return with_shots(circuit, shots)


def params(n: int = 3):
    return pnp.array(np.linspace(0.1, 0.9, n), requires_grad=True)


def by_purpose(records, purpose: str) -> list[telemetry.JobRecord]:
    return [r for r in records if r.purpose == purpose]


# --- import and patching ------------------------------------------------------------------------

def test_importing_the_adapter_does_not_import_pennylane() -> None:
    code = ("import sys, qobs, qobs_pennylane; qobs.configure(store=None) if False else None; "
            "from qobs import instrumentation; instrumentation.instrument(('pennylane',)); "
            "print('pennylane' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


MISSING = object()


def _snapshot() -> dict[tuple[object, str], object]:
    import pennylane.workflow.jacobian_products as jp
    from pennylane.devices import Device

    snap: dict[tuple[object, str], object] = {}
    for base in (Device, jp.JacobianProductCalculator):
        stack, seen = [base], set()
        while stack:
            cls = stack.pop()
            if cls in seen:
                continue
            seen.add(cls)
            stack.extend(cls.__subclasses__())
            for name in ("__init__", "execute", "compute_derivatives", "execute_and_compute_derivatives",
                         "compute_vjp", "execute_and_compute_vjp", "compute_jvp", "execute_and_compute_jvp",
                         "compute_jacobian", "execute_and_compute_jacobian", "execute_and_cache_jacobian"):
                snap[(cls, name)] = cls.__dict__.get(name, MISSING)
    for name in ("pennylane", "pennylane.workflow", "pennylane.workflow.execution", "pennylane.workflow.qnode",
                 "pennylane.devices", "pennylane.devices.device_constructor"):
        mod = sys.modules[name]
        for attr in ("execute", "device"):
            snap[(mod, attr)] = mod.__dict__.get(attr, MISSING)
    return snap


def test_uninstrument_restores_by_identity_and_instrument_twice_is_harmless(jobs) -> None:
    instrumentation.uninstrument()
    before = _snapshot()
    instrumentation.instrument()
    patched = _snapshot()
    changed = [k for k in before if before[k] is not patched[k]]
    assert any(k[1] == "execute" and getattr(k[0], "__name__", "") == "DefaultQubit" for k in changed)
    assert all(getattr(patched[k], instrumentation.WRAPPED, None) is before[k] for k in changed)
    instrumentation.instrument()  # again: nothing new is wrapped
    assert _snapshot() == patched
    dev = qml.device("default.qubit")
    qnode(dev, diff_method="parameter-shift")(params())
    assert len(jobs) == 1  # instrumenting twice does not double count

    class LateDevice(qml.devices.DefaultQubit):  # defined after instrument(): patched on first use
        def execute(self, circuits, execution_config=None):
            return super().execute(circuits, execution_config)

    qnode(LateDevice(), diff_method="parameter-shift")(params())
    assert len(jobs) == 2  # one job, not one per execute in the super() chain
    assert getattr(LateDevice.__dict__["execute"], instrumentation.WRAPPED, None) is not None
    instrumentation.uninstrument()
    after = _snapshot()
    assert all(after[k] is before[k] for k in before if k in after)
    assert getattr(LateDevice.__dict__["execute"], instrumentation.WRAPPED, None) is None
    n = len(jobs)
    qnode(dev, diff_method="parameter-shift")(params())
    assert len(jobs) == n  # nothing observed once uninstrumented
    instrumentation.instrument()


def test_device_constructed_and_class_defined_before_instrument_is_observed(jobs) -> None:
    instrumentation.uninstrument()

    class EarlyDevice(qml.devices.DefaultQubit):
        pass

    early = EarlyDevice()
    plain = qml.device("default.qubit")
    instrumentation.instrument()
    for dev in (early, plain):
        with qml.Tracker(dev) as tracker:
            qnode(dev, diff_method="parameter-shift")(params())
        assert tracker.totals["executions"] == 1
    assert [r.circuits for r in jobs] == [1, 1]


# --- counts: forward and gradient -----------------------------------------------------------------

@pytest.mark.parametrize("n_params", [2, 5])
def test_parameter_shift_forward_and_gradient_match_tracker_and_2p(jobs, metric, n_params: int) -> None:
    dev = qml.device("default.qubit")
    circuit = qnode(dev, diff_method="parameter-shift")
    x = params(n_params)
    labels = {"backend": "default.qubit", "provider": PROVIDER}
    fwd0 = metric("qobs_analytic_circuits_total", **labels, purpose="forward")
    grad0 = metric("qobs_analytic_circuits_total", **labels, purpose="gradient")
    circ0 = metric("qobs_circuits_total", **labels, operation="device_execute")
    with qml.Tracker(dev) as tracker:
        circuit(x)
    assert len(jobs) == tracker.totals["batches"] == 1
    assert jobs[0].circuits == tracker.totals["executions"] == 1
    assert jobs[0].purpose == "forward"
    jobs.clear()
    with qml.Tracker(dev) as tracker:
        qml.grad(circuit)(x)
    forward, gradient = by_purpose(jobs, "forward"), by_purpose(jobs, "gradient")
    assert len(jobs) == tracker.totals["batches"]
    assert sum(r.circuits for r in jobs) == tracker.totals["executions"] == 1 + 2 * n_params
    assert sum(r.circuits for r in forward) == 1
    assert sum(r.circuits for r in gradient) == 2 * n_params  # two shifted tapes per trainable parameter
    assert all(r.trainable_params == n_params for r in jobs)
    assert metric("qobs_analytic_circuits_total", **labels, purpose="forward") - fwd0 == 2
    assert metric("qobs_analytic_circuits_total", **labels, purpose="gradient") - grad0 == 2 * n_params
    assert metric("qobs_circuits_total", **labels, operation="device_execute") - circ0 == 2 + 2 * n_params


def test_gradient_transform_applied_to_qnode_is_gradient(jobs) -> None:
    dev = qml.device("default.qubit")
    circuit = qnode(dev)
    with qml.Tracker(dev) as tracker:
        qml.gradients.param_shift(circuit)(params(3))
    assert [r.purpose for r in jobs] == ["gradient"]
    assert jobs[0].circuits == tracker.totals["executions"] == 6


@pytest.mark.parametrize(("device", "method"), [
    ("default.qubit", "finite-diff"), ("default.mixed", "parameter-shift"), ("lightning.qubit", "parameter-shift"),
    ("default.qubit", "backprop"), ("default.qubit", "adjoint"),
])
def test_differentiation_methods_match_tracker(jobs, device: str, method: str) -> None:
    dev = qml.device(device, wires=3)
    circuit = qnode(dev, diff_method=method)
    with qml.Tracker(dev) as tracker:
        qml.grad(circuit)(params(3))
    totals = tracker.totals
    if method == "adjoint":  # one device call computing results and derivatives
        assert totals["execute_and_derivative_batches"] == len(jobs) == 1
        assert jobs[0].purpose == "gradient" and jobs[0].circuits == totals["derivatives"] == 1
    elif method == "backprop":  # differentiated through the one forward execution
        assert [r.purpose for r in jobs] == ["forward"]
        assert jobs[0].circuits == totals["executions"] == 1
    else:
        assert len(jobs) == totals["batches"] == 2
        assert sum(r.circuits for r in jobs) == totals["executions"]
        # Independent count: the gradient transform's own tapes for this circuit (finite-diff: P shifted
        # tapes plus the unshifted one; parameter-shift: 2P).
        tape = qml.workflow.construct_tape(circuit)(params(3))
        transform = qml.gradients.finite_diff if method == "finite-diff" else qml.gradients.param_shift
        expected = len(transform(tape)[0])
        assert expected == (4 if method == "finite-diff" else 6)
        assert sum(r.circuits for r in by_purpose(jobs, "gradient")) == expected
        assert sum(r.circuits for r in by_purpose(jobs, "forward")) == 1
    assert all(r.backend == device and r.status == "ok" for r in jobs)


def test_lightning_adjoint_is_one_gradient_job(jobs) -> None:
    dev = qml.device("lightning.qubit", wires=3)
    g = qml.grad(qnode(dev, diff_method="adjoint"))(params(3))
    assert np.all(np.isfinite(g))
    assert [(r.purpose, r.circuits, r.backend) for r in jobs] == [("gradient", 1, "lightning.qubit")]


def test_numpy_interface_forward_only(jobs) -> None:
    dev = qml.device("default.qubit")
    with qml.Tracker(dev) as tracker:
        qnode(dev, interface="numpy", diff_method=None)(np.array([0.1, 0.2, 0.3]))
    assert [(r.purpose, r.circuits) for r in jobs] == [("forward", tracker.totals["executions"])]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_other_interfaces(jobs, framework: str) -> None:
    pytest.importorskip(framework, reason=f"{framework} is not installed here (optional interface)")
    dev = qml.device("default.qubit")
    if framework == "torch":
        import torch

        x = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
        qnode(dev, diff_method="parameter-shift")(x).backward()
    else:
        import jax

        jax.grad(qnode(dev, diff_method="parameter-shift"))(jax.numpy.array([0.1, 0.2, 0.3]))
    assert sum(r.circuits for r in jobs) == 7


# --- shots, analytic, shape ---------------------------------------------------------------------

def test_shots_and_shot_vectors_match_tracker(jobs, metric) -> None:
    dev = qml.device("default.qubit", seed=11)
    labels = {"backend": "default.qubit", "provider": PROVIDER}
    before = {p: metric("qobs_shots_total", **labels, purpose=p) for p in ("forward", "gradient")}
    circuit = qnode(dev, diff_method="parameter-shift", shots=200)
    with qml.Tracker(dev) as tracker:
        qml.grad(circuit)(params(2))
    assert sum(r.shots for r in jobs) == tracker.totals["shots"] == 200 * (1 + 4)
    assert metric("qobs_shots_total", **labels, purpose="forward") - before["forward"] == 200
    assert metric("qobs_shots_total", **labels, purpose="gradient") - before["gradient"] == 800
    assert all(r.shots_requested == 200 and r.attributes[Attr.ANALYTIC] is False for r in jobs)
    jobs.clear()
    vec = qnode(dev, diff_method="parameter-shift", shots=[10, 20, 30])
    with qml.Tracker(dev) as tracker:
        vec(params(2))
    assert [r.shots for r in jobs] == [tracker.totals["shots"]] == [60]


def test_analytic_run_counts_zero_shot_circuits(jobs, metric) -> None:
    dev = qml.device("default.qubit")
    labels = {"backend": "default.qubit", "provider": PROVIDER}
    a0 = metric("qobs_analytic_circuits_total", **labels, purpose="forward")
    s0 = metric("qobs_shots_total", **labels, purpose="forward")
    tapes = [qml.tape.QuantumScript([qml.RX(0.1 * i, 0)], [qml.expval(qml.PauliZ(0))]) for i in range(4)]
    dev.execute(tapes)
    assert [(r.circuits, r.shots, r.attributes[Attr.ANALYTIC]) for r in jobs] == [(4, 0, True)]
    assert metric("qobs_analytic_circuits_total", **labels, purpose="forward") - a0 == 4
    assert metric("qobs_shots_total", **labels, purpose="forward") - s0 == 0


def _random_circuit(rng: np.random.Generator, n_wires: int, n_ops: int):
    plan = [(int(rng.integers(4)), [int(w) for w in rng.choice(n_wires, 3, replace=False)]) for _ in range(n_ops)]

    def circuit(x):
        for k, (kind, (a, b, c)) in enumerate(plan):
            if kind == 0:
                qml.RX(x[k % len(x)], wires=a)
            elif kind == 1:
                qml.CNOT(wires=[a, b])
            elif kind == 2:
                qml.CZ(wires=[b, c])
            else:
                qml.Toffoli(wires=[a, b, c])
        return qml.probs(wires=list(range(n_wires)))

    return circuit


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_width_depth_two_qubit_gates_match_qml_specs(jobs, metric, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_wires = int(rng.integers(3, 6))
    dev = qml.device("default.qubit", wires=n_wires)
    circuit = qml.QNode(_random_circuit(rng, n_wires, int(rng.integers(5, 30))), dev)
    x = np.array([0.3, 0.7])
    specs = qml.specs(circuit, level="device")(x)["resources"]
    d0 = metric("qobs_circuit_depth_sum", backend="default.qubit")
    circuit(x)
    (rec,) = jobs
    (s,) = rec.stats
    width = getattr(specs, "num_allocs", None) or getattr(specs, "num_wires", None)
    assert (s.width, s.depth, s.two_qubit_gates) == (width, specs.depth, specs.gate_sizes.get(2, 0))
    assert metric("qobs_circuit_depth_sum", backend="default.qubit") - d0 == specs.depth


def test_structure_cache_is_bounded_and_never_recomputes_a_seen_structure(jobs, monkeypatch) -> None:
    from qobs_pennylane import _stats

    monkeypatch.setattr(_stats, "MAX_STRUCTURES", 16)
    computed: list[int] = []
    real = _stats.compute
    monkeypatch.setattr(_stats, "compute", lambda tape: computed.append(1) or real(tape))
    _stats.clear()
    dev = qml.device("default.qubit", wires=8)

    def tape(n_ops: int, angle: float):
        ops = [qml.RX(angle, wires=k % 8) for k in range(n_ops)]
        return qml.tape.QuantumScript(ops, [qml.expval(qml.PauliZ(0))])

    dev.execute([tape(n, 0.1) for n in range(1, 5)] * 3)  # 4 structures, 12 tapes
    telemetry.drain()  # shapes are read where jobs are recorded
    assert len(computed) == 4
    dev.execute([tape(n, 0.9) for n in range(1, 5)])  # same structures, new angles
    telemetry.drain()
    assert len(computed) == 4
    for start in range(5, 200, 20):  # 195 distinct structures
        dev.execute([tape(n, 0.2) for n in range(start, start + 20)])
        telemetry.drain()
        assert _stats.size() <= 16
    assert sum(r.circuits for r in jobs) == 12 + 4 + 195 + 5


# --- errors, budgets, identity of results -------------------------------------------------------

class Boom(RuntimeError):
    pass


def test_a_device_that_raises_is_recorded_and_the_exception_propagates_unchanged(jobs, metric) -> None:
    error = Boom("device failed")

    class FailingDevice(qml.devices.DefaultQubit):
        def execute(self, circuits, execution_config=None):
            raise error

    labels = {"backend": "default.qubit", "provider": PROVIDER, "operation": "device_execute"}
    e0 = metric("qobs_jobs_total", **labels, status="error")
    with pytest.raises(Boom) as info:
        qnode(FailingDevice(), diff_method="parameter-shift")(params())
    assert info.value is error
    assert [(r.status, r.error_type, r.circuits) for r in jobs] == [("error", "Boom", 1)]
    assert metric("qobs_jobs_total", **labels, status="error") - e0 == 1
    assert metric("qobs_analytic_circuits_total", backend="default.qubit", provider=PROVIDER, purpose="forward") \
        is not None


def test_a_failure_inside_qobs_is_contained(jobs, monkeypatch) -> None:
    from qobs_pennylane import _stats

    from qobs import errors

    def broken(tape):
        raise ValueError("qobs bug")

    monkeypatch.setattr(_stats, "stats", broken)
    before = errors.internal_error_counts.get("adapter:pennylane", 0)
    dev = qml.device("default.qubit")
    assert np.isclose(qnode(dev)(params()), qnode(qml.device("default.qubit"))(params()))
    telemetry.drain()
    assert errors.internal_error_counts.get("adapter:pennylane", 0) > before


def test_submission_refused_is_recorded_and_nothing_runs(jobs, metric) -> None:
    def refuse(req: telemetry.SubmitRequest) -> None:
        assert req.provider == PROVIDER and req.circuits == 1 and req.shots == 100
        raise telemetry.SubmissionRefused("over budget")

    dev = qml.device("default.qubit", seed=1)
    r0 = metric("qobs_submission_errors_total", backend="default.qubit", provider=PROVIDER, reason="budget")
    telemetry.add_submit_guard(refuse)
    try:
        with qml.Tracker(dev) as tracker, pytest.raises(telemetry.SubmissionRefused):
            qnode(dev, diff_method="parameter-shift", shots=100)(params())
    finally:
        telemetry.remove_submit_guard(refuse)
    assert tracker.totals.get("executions", 0) == 0
    assert [(r.status, r.submission_reason, r.circuits) for r in jobs] == [("blocked", "budget", 0)]
    assert metric("qobs_submission_errors_total", backend="default.qubit", provider=PROVIDER,
                  reason="budget") - r0 == 1


def test_fallback_runs_on_the_fallback_device_and_records_the_reroute(jobs) -> None:
    fallback = qml.device("default.mixed", wires=3)

    def reroute(req: telemetry.SubmitRequest) -> telemetry.SubmitDecision:
        return telemetry.SubmitDecision(fallback=fallback, fallback_name="default.mixed", reason="budget")

    dev = qml.device("default.qubit", wires=3)
    telemetry.add_submit_guard(reroute)
    try:
        with qml.Tracker(dev) as t_dev, qml.Tracker(fallback) as t_fb:
            value = qnode(dev, diff_method="parameter-shift")(params())
    finally:
        telemetry.remove_submit_guard(reroute)
    assert t_dev.totals.get("executions", 0) == 0 and t_fb.totals["executions"] == 1
    (rec,) = jobs
    assert np.isclose(value, qnode(qml.device("default.qubit"))(params()))
    assert rec.backend == "default.mixed" and rec.attributes[Attr.REROUTED_FROM] == "default.qubit"
    assert rec.context[telemetry.CTX_BACKEND] is fallback


def _train(shots, steps: int = 3):
    dev = qml.device("default.qubit", seed=1234)
    circuit = qnode(dev, diff_method="parameter-shift", shots=shots)
    opt = qml.GradientDescentOptimizer(0.2)
    x = params(3)
    values = []
    for _ in range(steps):
        x, value = opt.step_and_cost(circuit, x)
        values.append(value)
    return np.array(values), np.array(x), np.array(qml.jacobian(circuit)(x))


@pytest.mark.parametrize("shots", [None, 50])
def test_results_and_gradients_are_bit_identical_with_and_without_instrumentation(jobs, shots) -> None:
    on = _train(shots)
    assert jobs
    instrumentation.uninstrument()
    try:
        off = _train(shots)
    finally:
        instrumentation.instrument()
    for a, b in zip(on, off, strict=True):
        assert np.array_equal(a, b)


def test_counts_results_reach_listeners_that_ask_for_them(jobs) -> None:
    dev = qml.device("default.qubit", seed=3)

    @qml.qnode(dev)
    def bell():
        qml.Hadamard(0)
        qml.CNOT([0, 1])
        return qml.counts()

    wanted = lambda rec: True  # noqa: E731 - a listener that reads results says so
    telemetry.add_result_wanter(wanted)
    try:
        result = with_shots(bell, 64)()
    finally:
        telemetry.remove_result_wanter(wanted)
    with_shots(bell, 32)()  # nobody asks: the record carries its figures, not the SDK's objects
    asked, unasked = jobs
    assert asked.context[telemetry.CTX_COUNTS] == [dict(result)]
    assert sum(asked.context[telemetry.CTX_COUNTS][0].values()) == 64
    assert asked.context[telemetry.CTX_BACKEND] is dev
    assert telemetry.CTX_COUNTS not in unasked.context and telemetry.CTX_CIRCUITS not in unasked.context
    assert (unasked.shots, unasked.circuits, unasked.status) == (32, 1, "ok")


def test_a_batch_nothing_asks_for_is_not_kept_until_it_is_recorded(jobs) -> None:
    """The tapes and result of an executed batch are let go when the user drops them, not held until
    the recorder's next batch (held objects age into the GC's old generations, whose collections
    walk PennyLane's whole heap). The recorder is kept from recording while the test looks."""
    dev = qml.device("default.qubit")
    rec = telemetry._recorder
    with rec._lock:  # the recorder thread cannot record meanwhile
        rec._last = time.monotonic()
        tape = qml.tape.QuantumScript([qml.RY(0.3, 0), qml.CNOT([0, 1])], [qml.expval(qml.PauliZ(1))])
        result = dev.execute((tape,))
        refs = [weakref.ref(tape), weakref.ref(tape.operations[0])]
        value = float(result[0])
        del tape, result
        alive = [r() is not None for r in refs]
        queued = len(rec._q)
    assert queued >= 1 and alive == [False, False]
    (job,) = jobs
    assert (job.circuits, job.shots, job.status) == (1, 0, "ok")
    assert value == pytest.approx(np.cos(0.3))


def test_a_failed_batch_does_not_keep_the_callers_frames_alive(jobs) -> None:
    """A batch that raised is recorded with its error type, and what the caller's frames held (the tape,
    their locals) goes when the caller drops the exception, without waiting for the cyclic GC: qobs
    keeps no reference from the job back to the exception, whose traceback holds those frames."""

    class Boom(Exception):
        pass

    class Failing(qml.devices.DefaultQubit):
        def execute(self, circuits, execution_config=None):
            raise Boom("device failed")

    class Held:  # a large object in the caller's frame
        pass

    dev = Failing()

    def step() -> tuple[weakref.ref, weakref.ref]:
        held = Held()
        tape = qml.tape.QuantumScript([qml.RY(0.3, 0), qml.CNOT([0, 1])], [qml.expval(qml.PauliZ(1))])
        try:
            dev.execute((tape,))
        except Boom:
            pass
        return weakref.ref(held), weakref.ref(tape)

    gc.disable()
    try:
        refs = step()
        telemetry.drain()
        alive = [r() is not None for r in refs]
    finally:
        gc.enable()
    assert alive == [False, False]
    (job,) = jobs
    assert (job.status, job.error_type.rsplit(".", 1)[-1]) == ("error", "Boom")


def test_legacy_device_through_the_facade(jobs) -> None:
    class TinyLegacy(qml.devices.QubitDevice):
        """A minimal legacy (pre-``Device`` API) statevector device."""

        name = "tiny legacy"
        short_name = "tiny.legacy"
        pennylane_requires = ">=0.30"
        version = "0.0.1"
        author = "qobs"
        operations = {"RY", "CNOT"}
        observables = {"PauliZ", "Prod"}

        def apply(self, operations, rotations=None, **kwargs):
            state = np.zeros(2 ** self.num_wires, dtype=complex)
            state[0] = 1
            for op in list(operations) + list(rotations or []):
                state = qml.matrix(op, wire_order=self.wires) @ state
            self._state = state

        def analytic_probability(self, wires=None):
            return self.marginal_prob(np.abs(self._state) ** 2, wires)

    dev = TinyLegacy(wires=3)
    value = qnode(dev, diff_method="parameter-shift")(params())
    assert [(r.backend, r.circuits, r.purpose) for r in jobs] == [("tiny.legacy", 1, "forward")]
    assert np.isclose(value, qnode(qml.device("default.qubit"))(params()))


# --- spans --------------------------------------------------------------------------------------

@pytest.fixture
def spans():
    """An in-memory span exporter on the global SDK provider (set here unless a test module did)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another provider owns the process"
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    try:
        yield exporter
    finally:
        processor.shutdown()


def test_spans_nest_under_the_callers_span(spans, jobs) -> None:
    from opentelemetry import trace

    dev = qml.device("default.qubit")
    circuit = qnode(dev, diff_method="parameter-shift")
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("training step") as parent:
        qml.grad(circuit)(params(2))
    telemetry.drain()
    mine = [s for s in spans.get_finished_spans() if s.name == "device_execute default.qubit"]
    assert len(mine) == len(jobs) == 2
    for s in mine:
        assert s.parent is not None and s.parent.span_id == parent.get_span_context().span_id
        assert s.context.trace_id == parent.get_span_context().trace_id
    attrs = [dict(s.attributes) for s in mine]
    assert [a[Attr.PURPOSE] for a in attrs] == ["forward", "gradient"]
    assert [a[Attr.CIRCUITS] for a in attrs] == [1, 4]
    assert all(a[Attr.ANALYTIC] is True and a[Attr.SHOTS] == 0 and a[Attr.BACKEND] == "default.qubit"
               and a[Attr.TRAINABLE_PARAMS] == 2 for a in attrs)


_GROWTH = """
import gc, sys
import qobs
from qobs import instrumentation
import pennylane as qml
from pennylane import numpy as pnp

qobs.configure(store=sys.argv[1], flush_interval=0.05)
qobs.instrument(adapters=("pennylane",))
dev = qml.device("default.qubit", wires=3)

@qml.qnode(dev, diff_method="parameter-shift")
def circuit(x):
    for i in range(len(x)):
        qml.RY(x[i], wires=i % 3)
        qml.CNOT(wires=[i % 3, (i + 1) % 3])
    return qml.expval(qml.PauliZ(0) @ qml.PauliZ(2))

grad = qml.grad(circuit)
x = pnp.array([0.1, 0.5, 0.9], requires_grad=True)

def growth(calls):
    for _ in range(20):  # caches and first-call costs
        circuit(x)
    grad(x)
    qobs.flush()
    gc.collect()
    before = len(gc.get_objects())
    for i in range(calls):
        circuit(x)
        if i % 10 == 0:
            grad(x)
    qobs.flush()
    gc.collect()
    return len(gc.get_objects()) - before

instrumentation.uninstrument()
plain = growth(300)
instrumentation.instrument(("pennylane",))
observed = growth(300)
kept = []  # the control: a listener that keeps one list per job must show
qobs.telemetry.add_job_listener(lambda rec: kept.append([rec.shots]))
print(plain, observed, growth(300))
"""


def test_a_long_training_run_keeps_nothing_per_call(tmp_path) -> None:
    """No history and no per-call leftovers: after many forward and gradient calls, the GC-tracked objects
    alive grow by what PennyLane itself leaves (about 6 per forward call, measured without qobs in the
    same process), not more. Objects that qobs kept would also, once promoted to the oldest GC
    generation, bring PennyLane's full collections (0.1 s each) forward. Tolerance: 100 objects over
    330 calls (one-time caches such as SQLite's statement cache); one object kept per call would be 330,
    as a control listener that keeps a list per job shows. A fresh interpreter: no tracer provider or
    log capture of other tests keeps anything."""
    env = clean_env()
    r = subprocess.run([sys.executable, "-c", _GROWTH, str(tmp_path / "runs.db")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    plain, observed, leaking = map(int, r.stdout.split()[-3:])
    assert leaking - plain >= 330, (leaking, plain)  # the measurement does see a kept object per job
    assert observed - plain <= 100, (observed, plain)
