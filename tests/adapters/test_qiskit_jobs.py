"""Qiskit jobs observed through the adapter, every figure checked against ground truth computed here.

Real Aer, reference primitives, BackendSamplerV2/EstimatorV2, Aer primitives and the IBM runtime's
local fake-backend mode. Metric reads are deltas: the registry is process-global.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import qobs
from qobs import telemetry

pytest.importorskip("qiskit_aer")

from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector
from qiskit.primitives import (
    BackendEstimatorV2,
    BackendSamplerV2,
    StatevectorEstimator,
    StatevectorSampler,
)
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import EstimatorV2 as AerEstimator
from qiskit_aer.primitives import SamplerV2 as AerSampler


def total(name: str, **labels: str) -> float:
    """Sum of a sample over every label set matching ``labels``."""
    from prometheus_client import REGISTRY

    out = 0.0
    for fam in REGISTRY.collect():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out += s.value
    return out


def two_qubit(circ: QuantumCircuit) -> int:
    """Ground truth for two-qubit gates, counted independently of the adapter's method."""
    return sum(1 for inst in circ.data if len(inst.qubits) == 2 and inst.operation.name != "barrier")


def ansatz(n: int = 3, layers: int = 2, measure: bool = True) -> QuantumCircuit:
    p = ParameterVector("t", n * layers)
    qc = QuantumCircuit(n)
    for layer in range(layers):
        for q in range(n):
            qc.ry(p[layer * n + q], q)
        for q in range(n - 1):
            qc.cx(q, q + 1)
    if measure:
        qc.measure_all()
    return qc


def jobs_rows(store) -> list[sqlite3.Row]:
    qobs.flush()
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    return conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()


def aer() -> AerSimulator:
    return AerSimulator(max_parallel_threads=1, seed_simulator=11)


def test_backend_run_on_aer_records_jobs_shots_and_executed_shapes(qobs_run):
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    sim = AerSimulator.from_backend(FakeManilaV2(), max_parallel_threads=1, seed_simulator=3)
    logical = [ansatz().assign_parameters(np.linspace(0.1, 0.6, 6) * k) for k in (1, 2)]
    executed = transpile(logical, sim, seed_transpiler=5)
    jobs0 = total("qobs_jobs_total", backend=sim.name, operation="backend_run", status="ok")
    circ0 = total("qobs_circuits_total", backend=sim.name, operation="backend_run")
    shots0 = total("qobs_shots_total", backend=sim.name)
    depth0 = total("qobs_circuit_depth_sum", backend=sim.name)
    n0 = total("qobs_circuit_depth_count", backend=sim.name)
    twoq0 = total("qobs_circuit_two_qubit_gates_sum", backend=sim.name)
    width0 = total("qobs_circuit_width_qubits_sum", backend=sim.name)

    r1 = sim.run(executed, shots=300).result()
    r2 = sim.run(executed[0], shots=77).result()

    shots = sum(sum(r1.get_counts(i).values()) for i in range(2)) + sum(r2.get_counts().values())
    ran = [*executed, executed[0]]
    assert total("qobs_jobs_total", backend=sim.name, operation="backend_run", status="ok") - jobs0 == 2
    assert total("qobs_circuits_total", backend=sim.name, operation="backend_run") - circ0 == 3
    assert total("qobs_shots_total", backend=sim.name) - shots0 == shots == 677
    assert total("qobs_circuit_depth_count", backend=sim.name) - n0 == 3
    assert total("qobs_circuit_depth_sum", backend=sim.name) - depth0 == sum(c.depth() for c in ran)
    assert total("qobs_circuit_two_qubit_gates_sum", backend=sim.name) - twoq0 == sum(two_qubit(c) for c in ran)
    assert total("qobs_circuit_width_qubits_sum", backend=sim.name) - width0 == sum(c.num_qubits for c in ran)
    # The store's commit order is not submission order (its writer may drain inline): find the row.
    (first,) = [r for r in jobs_rows(qobs_run) if r["job_id"] == r1.job_id]
    assert (first["circuits"], first["shots"], first["shots_requested"]) == (2, 600, 300)
    assert first["depth"] == max(c.depth() for c in executed)
    assert first["width"] == 5  # transpiled onto the 5-qubit device
    assert first["two_qubit_gates"] == max(two_qubit(c) for c in executed)
    assert first["depth_before"] == max(c.depth() for c in logical)
    assert first["queue_s"] is None  # a local simulator has no queue: unknown, not zero
    assert first["execution_s"] is not None and first["execution_s"] > 0
    assert first["job_id"] == r1.job_id
    assert first["provider"] == "aer" and first["status"] == "ok"


def test_transpile_time_of_a_job_is_stored_and_observed_once(qobs_run):
    sim = aer()
    count0 = total("qobs_transpile_duration_seconds_count", backend=sim.name)
    sum0 = total("qobs_transpile_duration_seconds_sum", backend=sim.name)
    isa = transpile(ansatz().assign_parameters(np.linspace(0, 1, 6)), sim)
    spent = total("qobs_transpile_duration_seconds_sum", backend=sim.name) - sum0
    assert total("qobs_transpile_duration_seconds_count", backend=sim.name) - count0 == 1 and spent > 0
    job = sim.run(isa, shots=64)
    job.result()
    # the job carries the transpile share of its circuit; the histogram saw the transpilation once, not twice
    assert total("qobs_transpile_duration_seconds_count", backend=sim.name) - count0 == 1
    (row,) = [r for r in jobs_rows(qobs_run) if r["job_id"] == job.job_id()]
    assert row["transpile_s"] == pytest.approx(spent)


@pytest.mark.parametrize("make", [StatevectorSampler, lambda: BackendSamplerV2(backend=aer()),
                                  lambda: AerSampler(options={"backend_options": {"max_parallel_threads": 1}})],
                         ids=["statevector", "backend_sampler", "aer_sampler"])
def test_samplers_count_circuits_bindings_and_shots_from_results(qobs_run, make):
    sampler = make()
    qc = ansatz()
    vals = np.random.default_rng(0).random((4, qc.num_parameters))
    fixed = qc.assign_parameters(vals[0])
    jobs0 = total("qobs_jobs_total", operation="sampler", status="ok")
    circ0 = total("qobs_circuits_total", operation="sampler")
    shots0 = total("qobs_shots_total")
    depth_n0 = total("qobs_circuit_depth_count")
    depth0 = total("qobs_circuit_depth_sum")

    res = sampler.run([(qc, vals), fixed], shots=200).result()

    shots = sum(sum(res[0].data.meas.get_counts(loc=i).values()) for i in range(4)) + \
        sum(res[1].data.meas.get_counts().values())
    assert total("qobs_jobs_total", operation="sampler", status="ok") - jobs0 == 1
    assert total("qobs_circuits_total", operation="sampler") - circ0 == 5
    assert total("qobs_shots_total") - shots0 == shots == 1000
    assert total("qobs_circuit_depth_count") - depth_n0 == 5
    assert total("qobs_circuit_depth_sum") - depth0 == 4 * qc.depth() + fixed.depth()
    row = jobs_rows(qobs_run)[-1]
    assert (row["operation"], row["circuits"], row["bindings"], row["shots"]) == ("sampler", 5, 5, 1000)
    assert row["two_qubit_gates"] == two_qubit(qc) and row["width"] == 3
    assert row["execution_s"] is not None


def test_estimators_record_precision_and_shots_where_derivable(qobs_run, metric):
    qc = ansatz(measure=False)
    vals = np.random.default_rng(1).random((3, qc.num_parameters))
    obs = SparsePauliOp.from_list([("ZZI", 1.0), ("IXX", 0.5)])
    analytic0 = total("qobs_analytic_circuits_total")
    StatevectorEstimator().run([(qc, obs, vals)]).result()
    AerEstimator().run([(qc, obs, vals)]).result()
    assert total("qobs_analytic_circuits_total") - analytic0 == 6  # evaluated exactly: zero shots
    est = BackendEstimatorV2(backend=aer())
    res = est.run([(qc, obs, vals)], precision=0.05).result()
    rows = sorted(jobs_rows(qobs_run), key=lambda r: r["shots"])
    assert [r["operation"] for r in rows] == ["estimator"] * 3
    assert [r["shots"] for r in rows[:2]] == [0, 0]
    per_circuit = res[0].metadata["shots"]
    assert per_circuit == int(np.ceil(1 / 0.05**2))
    assert rows[2]["shots"] == per_circuit * 3 and rows[2]["circuits"] == 3
    assert rows[2]["backend"] == "aer_simulator"


def test_ibm_runtime_local_mode_is_one_job_with_metrics(qobs_run):
    runtime = pytest.importorskip("qiskit_ibm_runtime")
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    fake = FakeManilaV2()
    isa = transpile(ansatz().assign_parameters([0.3] * 6), fake, seed_transpiler=2)
    all0 = total("qobs_jobs_total")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = runtime.SamplerV2(mode=fake)
    job = sampler.run([isa, isa], shots=128)
    res = job.result()
    qobs.flush()  # its metrics() is read where it is recorded, which a scrape leaves to the recorder
    assert total("qobs_jobs_total") - all0 == 1  # the local service's BackendSamplerV2 and backend.run are inside it
    row = jobs_rows(qobs_run)[-1]
    assert (row["backend"], row["provider"], row["operation"]) == ("fake_manila", "ibm", "sampler")
    assert row["shots"] == sum(sum(r.data.meas.get_counts().values()) for r in res) == 256
    assert (row["depth"], row["width"], row["two_qubit_gates"]) == (isa.depth(), 5, two_qubit(isa))
    assert row["job_id"] == job.job_id() and row["session_id"] == job.session_id
    assert row["queue_s"] is not None  # from job.metrics() timestamps


def make_failing_backend(exc: Exception):
    """A BackendV2 subclass whose run raises, defined after instrument() (observed all the same)."""
    from qiskit.providers import BackendV2, Options
    from qiskit.transpiler import Target

    class Failing(BackendV2):
        calls = 0

        def __init__(self) -> None:
            super().__init__(name="failing_backend")
            self._target = Target(num_qubits=3)

        @property
        def target(self):
            return self._target

        @property
        def max_circuits(self):
            return None

        @classmethod
        def _default_options(cls):
            return Options(shots=100)

        def run(self, run_input, **options):
            type(self).calls += 1
            raise exc

    return Failing()


def test_submission_error_and_error_while_running_are_told_apart(qobs_run, metric):
    exc = ValueError("circuit does not fit")
    backend = make_failing_backend(exc)
    qc = ansatz().assign_parameters([0.1] * 6)
    sub0 = metric("qobs_submission_errors_total", backend="failing_backend", provider="tests", reason="validation")
    with pytest.raises(ValueError) as info:
        backend.run(qc, shots=10)
    assert info.value is exc and type(backend).calls == 1  # the user's exception, unchanged
    assert metric("qobs_submission_errors_total", backend="failing_backend", provider="tests",
                  reason="validation") - sub0 == 1
    # The same backend under BackendSamplerV2: the failure happens inside the job, while running.
    err0 = metric("qobs_jobs_total", backend="failing_backend", provider="tests", operation="sampler", status="error")
    job = BackendSamplerV2(backend=backend).run([qc])
    with pytest.raises(ValueError) as info2:
        job.result()
    assert info2.value is exc
    assert metric("qobs_jobs_total", backend="failing_backend", provider="tests", operation="sampler",
                  status="error") - err0 == 1
    rows = jobs_rows(qobs_run)
    assert sorted((r["operation"], r["status"], r["error_type"], r["submission_reason"] or "") for r in rows) == [
        ("backend_run", "error", "ValueError", "validation"), ("sampler", "error", "ValueError", "")]


def test_a_run_input_that_is_not_a_list_is_one_circuit(qobs_run):
    """A string given to backend.run (a user's mistake the job fails on) is one run input, not one circuit
    per character."""
    sim = AerSimulator(seed_simulator=1)
    with pytest.raises(AttributeError):  # Aer's own error, unchanged
        sim.run("notacircuit", shots=10).result()
    rows = jobs_rows(qobs_run)
    assert [(r["status"], r["circuits"]) for r in rows] == [("error", 1)]


def test_cancelled_job_recorded_without_result_call(qobs_run, metric):
    from qiskit_aer.jobs import utils as aer_jobs

    gate = threading.Event()
    aer_jobs.DEFAULT_EXECUTOR.submit(gate.wait, 30)  # occupies Aer's only job worker
    sim = AerSimulator(max_parallel_threads=1)
    qc = ansatz().assign_parameters([0.2] * 6)
    c0 = metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run",
                status="cancelled")
    ok0 = metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run", status="ok")
    queued = sim.run(qc, shots=10)
    later = sim.run(qc, shots=10)  # its result() is never called
    assert queued.cancel()
    gate.set()
    assert metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run",
                  status="cancelled") - c0 == 1
    deadline = time.monotonic() + 30
    while metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run",
                 status="ok") - ok0 < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert later.status().name == "DONE"
    assert metric("qobs_jobs_total", backend="aer_simulator", provider="aer", operation="backend_run",
                  status="ok") - ok0 == 1


def test_jobs_from_many_threads_keep_exact_counters(qobs_run):
    sim = aer()
    sampler = AerSampler(options={"backend_options": {"max_parallel_threads": 1}})
    qc = ansatz().assign_parameters([0.4] * 6)
    jobs0, shots0 = total("qobs_jobs_total"), total("qobs_shots_total")

    def work(i: int) -> int:
        if i % 2:
            return sum(sim.run(qc, shots=10 + i).result().get_counts().values())
        return sum(sampler.run([qc], shots=10 + i).result()[0].data.meas.get_counts().values())

    with ThreadPoolExecutor(max_workers=8) as ex:
        shots = sum(ex.map(work, range(64)))
    assert total("qobs_jobs_total") - jobs0 == 64
    assert total("qobs_shots_total") - shots0 == shots == sum(10 + i for i in range(64))


def test_results_are_bit_for_bit_identical_with_and_without_instrumentation(qobs_run):
    from qobs import instrumentation

    qc = ansatz()
    vals = np.random.default_rng(5).random((5, qc.num_parameters))
    bound = qc.assign_parameters(vals[0])

    def workload():
        sim = AerSimulator(max_parallel_threads=1, seed_simulator=1234)
        counts = sim.run(transpile(bound, sim), shots=2048).result().get_counts()
        sampler = AerSampler(seed=99, options={"backend_options": {"max_parallel_threads": 1}})
        arrays = sampler.run([(qc, vals)], shots=512).result()[0].data.meas.array.copy()
        evs = BackendEstimatorV2(backend=AerSimulator(max_parallel_threads=1, seed_simulator=7)).run(
            [(qc.remove_final_measurements(inplace=False), SparsePauliOp("ZZZ"), vals)]).result()[0].data.evs
        return counts, arrays, evs

    jobs0 = total("qobs_jobs_total")
    observed = workload()
    assert total("qobs_jobs_total") - jobs0 == 3  # really instrumented
    qobs.uninstrument()
    assert instrumentation.patch_count() == 0
    plain = workload()
    assert total("qobs_jobs_total") - jobs0 == 3  # really plain
    assert observed[0] == plain[0]
    assert np.array_equal(observed[1], plain[1])
    assert np.array_equal(observed[2], plain[2])


def test_depth_is_computed_once_per_circuit_structure(qobs_run, monkeypatch):
    calls = []
    original = QuantumCircuit.depth

    def counting(self, *a, **k):
        calls.append(len(self.data))
        return original(self, *a, **k)

    monkeypatch.setattr(QuantumCircuit, "depth", counting)
    sampler = StatevectorSampler(seed=1)
    qc = ansatz(n=2, layers=3)
    for k in range(5):
        sampler.run([qc.assign_parameters([0.1 * k] * qc.num_parameters)], shots=8).result()  # new objects
        sampler.run([(qc, [0.2] * qc.num_parameters)], shots=8).result()  # same object
    qobs.flush()  # shapes are read where jobs are recorded, off the user's thread
    assert len(calls) == 1  # the bound copies share the parameterised circuit's structure


def test_a_result_nothing_asks_for_is_not_kept_until_it_is_recorded(qobs_run):
    """An ideal simulator's result is let go when the user drops it, not held until the recorder's next
    batch (held results age into the GC's old generations: collections that walk the whole heap). A job
    the fidelity probe picks (a noisy backend; its seeded draw is made at hand-over) keeps its result
    until recorded; one it does not pick is let go too.
    The recorder is kept from recording while the test looks."""
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    qobs.configure(fidelity_sample=1.0)
    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cx"])
    ideal = aer()
    noisy = AerSimulator(noise_model=noise, max_parallel_threads=1, seed_simulator=2)
    circ = transpile(ansatz().assign_parameters(np.linspace(0.1, 0.6, 6)), ideal)
    rec = telemetry._recorder
    with rec._lock:  # the recorder thread cannot record meanwhile
        rec._last = time.monotonic()
        alive = {}
        for name, backend in (("ideal", ideal), ("noisy", noisy)):
            result = backend.run(circ, shots=128).result()
            ref = weakref.ref(result)
            del result
            alive[name] = ref() is not None
        queued = len(rec._q)
    assert queued == 2 and alive == {"ideal": False, "noisy": True}
    qobs.configure(fidelity_sample=1e-12)  # the probe draws at hand-over: a job it does not pick is let go
    with rec._lock:
        rec._last = time.monotonic()
        result = noisy.run(circ, shots=128).result()
        ref = weakref.ref(result)
        del result
        assert ref() is None
    rows = jobs_rows(qobs_run)
    assert [(r["shots"], r["status"], r["circuits"]) for r in rows] == [(128, "ok", 1)] * 3
    assert rows[0]["execution_s"] is not None and rows[0]["depth"] == circ.depth()


def test_a_repeated_job_described_once_still_sees_what_changed(qobs_run):
    """Repeated jobs (same backend or sampler, same circuit objects, same shots) reuse one description;
    a changed default shot count, a circuit grown in place, another circuit or a new sampler is
    described anew."""
    sim = aer()
    qc = transpile(ansatz().assign_parameters(np.linspace(0.1, 0.6, 6)), sim)
    sim.set_options(shots=100)
    sim.run(qc).result()
    sim.run(qc).result()
    sim.set_options(shots=200)
    sim.run(qc).result()
    grown = qc.copy()
    sim.run(grown).result()
    grown.x(0)
    grown.measure_all()  # a new register and measurements: deeper and wider in clbits
    sim.run(grown).result()
    sampler = AerSampler(seed=1)
    for shots in (64, 64, 32):
        sampler.run([qc], shots=shots).result()
    rows = jobs_rows(qobs_run)
    assert [r["shots_requested"] for r in rows] == [100, 100, 200, 200, 200, 64, 64, 32]
    assert [r["shots"] for r in rows] == [100, 100, 200, 200, 200, 64, 64, 32]
    assert [r["depth"] for r in rows[:5]] == [qc.depth()] * 4 + [grown.depth()]
    assert grown.depth() > qc.depth()


@pytest.fixture
def untraced(monkeypatch):
    """A process without a tracer provider, as a program that never sets one (an earlier test in this process
    may have set the global one, which OpenTelemetry lets be set once): jobs may take the lean lane."""
    from opentelemetry import trace

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    assert not telemetry.tracing_possible()


def _lean_workload(sim: AerSimulator, sampler: AerSampler, sv: StatevectorSampler, circ: QuantumCircuit,
                   seen: list) -> None:
    """Repeated jobs of ideal simulators, one in a training step; ``seen`` gets whether each job was on the
    lean lane between its run() and its result()."""
    from qobs_qiskit import _hooks

    from qobs import training

    for i in range(4):
        j = sim.run(circ, shots=50 + 0 * i)
        seen.append(id(j) in _hooks._lean)
        j.result()
    for _ in range(3):
        j = sampler.run([circ], shots=40)
        seen.append(id(j) in _hooks._lean)
        j.result()
    with training.step(model="lean-model", step=1):
        for _ in range(3):
            j = sv.run([circ], shots=30)
            seen.append(id(j) in _hooks._lean)
            j.result()


def test_repeated_jobs_of_an_ideal_simulator_record_what_the_full_path_records(qobs_run, untraced):
    """Repeated jobs of an ideal simulator with nothing wanting more (no guard, no span, no opt-in recording)
    take the lean lane: their record is made on the recorder's thread. The same workload with a pass-through
    submit guard (which sends every job the full way) must record the same rows and the same listener
    records, timings and ids aside."""
    records: list = []

    def listener(rec) -> None:
        records.append((rec.operation, rec.backend, rec.provider, rec.status, rec.circuits, rec.bindings, rec.shots,
                        rec.shots_requested, rec.simulator, rec.model, [(s.width, s.depth, s.two_qubit_gates)
                                                                        for s in rec.stats],
                        type(rec.context.get(telemetry.CTX_BACKEND)).__name__, rec.job_id is not None,
                        rec.execution_s is not None, rec.duration_s > 0))

    telemetry.add_job_listener(listener)
    try:
        sim = aer()
        circ = transpile(ansatz().assign_parameters(np.linspace(0.1, 0.6, 6)), sim)
        sampler, sv = AerSampler(seed=3), StatevectorSampler(seed=3)
        lean_seen: list[bool] = []
        _lean_workload(sim, sampler, sv, circ, lean_seen)
        lean_rows = jobs_rows(qobs_run)
        lean_records = list(records)

        def let_through(request):
            return None

        telemetry.add_submit_guard(let_through)
        try:
            records.clear()
            full_seen: list[bool] = []
            _lean_workload(sim, sampler, sv, circ, full_seen)
            full_rows = jobs_rows(qobs_run)[len(lean_rows):]
        finally:
            telemetry.remove_submit_guard(let_through)
    finally:
        telemetry.remove_job_listener(listener)
    # each description's first job goes the full way; the repeats take the lean lane, and none with a guard
    assert lean_seen == [False, True, True, True, False, True, True, False, True, True]
    assert full_seen == [False] * 10
    varying = {"id", "ts", "duration_s", "execution_s", "queue_s", "job_id", "transpile_s"}
    def strip(rows):
        return [{k: r[k] for k in r.keys() if k not in varying} for r in rows]
    assert strip(lean_rows) == strip(full_rows)
    assert lean_records == records
    assert [r[6] for r in lean_records] == [50] * 4 + [40] * 3 + [30] * 3  # shots, from the results
    assert [r[9] for r in lean_records] == [None] * 7 + ["lean-model"] * 3
    assert all(r["job_id"] for r in lean_rows) and all(r["execution_s"] is not None for r in lean_rows)
    assert lean_records[1][10] == [(circ.num_qubits, circ.depth(), two_qubit(circ))]


def test_lean_jobs_cancelled_failed_timed_out_or_never_resulted_are_recorded_once(qobs_run, metric, untraced):
    """The lean lane's other endings: a cancelled job (recorded as it is cancelled), a job whose result() is
    never called (recorded by the finisher's scan), a result() that times out while the job runs (the job
    goes on and is recorded once when it ends), and a job whose run fails on the simulator's thread."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from qiskit.circuit import Gate
    from qiskit.exceptions import QiskitError
    from qiskit_aer.jobs import utils as aer_jobs
    from qobs_qiskit import _hooks

    sim = AerSimulator(max_parallel_threads=1)
    qc = transpile(ansatz().assign_parameters([0.2] * 6), sim)
    sim.run(qc, shots=10).result()  # the description's first job: the repeats below are lean
    gate = threading.Event()
    aer_jobs.DEFAULT_EXECUTOR.submit(gate.wait, 30)  # occupies Aer's only job worker
    timed_out = sim.run(qc, shots=10)
    cancelled = sim.run(qc, shots=10)
    never = sim.run(qc, shots=10)
    assert {id(j) for j in (timed_out, cancelled, never)} <= set(_hooks._lean)
    labels = {"backend": "aer_simulator", "provider": "aer", "operation": "backend_run"}
    c0, ok0 = metric("qobs_jobs_total", status="cancelled", **labels), metric("qobs_jobs_total", status="ok", **labels)
    with pytest.raises(FutureTimeout):
        timed_out.result(timeout=0.01)
    assert cancelled.cancel()
    assert metric("qobs_jobs_total", status="cancelled", **labels) - c0 == 1
    gate.set()
    assert sum(timed_out.result().get_counts().values()) == 10
    deadline = time.monotonic() + 30
    while metric("qobs_jobs_total", status="ok", **labels) - ok0 < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert never.status().name == "DONE"
    # an ideal simulator failing while it runs: an opaque gate the statevector cannot apply
    opaque = QuantumCircuit(1)
    opaque.append(Gate("opaque", 1, []), [0])
    opaque.measure_all()
    sv = StatevectorSampler()
    for _ in range(2):  # the second is lean
        job = sv.run([opaque])
        with pytest.raises(QiskitError):
            job.result()
    rows = jobs_rows(qobs_run)
    assert sorted((r["operation"], r["status"], r["shots"], r["error_type"]) for r in rows) == [
        ("backend_run", "cancelled", None, None)] + [("backend_run", "ok", 10, None)] * 3 + [
        ("sampler", "error", None, "QiskitError")] * 2
    assert {r["job_id"] for r in rows if r["status"] == "ok"} >= {timed_out.job_id(), never.job_id()}
    assert metric("qobs_jobs_total", status="ok", **labels) - ok0 == 2
    assert not _hooks._lean


def test_a_repeated_job_whose_submission_raises_runs_the_sdk_once(qobs_run, untraced, monkeypatch):
    """The user's exception from a lean submission reaches the user unchanged, from one call of the SDK's
    run, and is not taken for a qobs failure. The SDK's run is counted by its own pub coercion (qobs's
    description of the job coerces too, from elsewhere)."""
    import sys

    from qiskit.primitives.containers.sampler_pub import SamplerPub

    from qobs import errors

    real = SamplerPub.coerce.__func__
    calls = []

    def coerce(cls, pub, shots=None):
        if sys._getframe(1).f_code.co_filename.endswith("statevector_sampler.py"):
            calls.append(shots)  # StatevectorSampler.run's own body
        return real(cls, pub, shots)

    monkeypatch.setattr(SamplerPub, "coerce", classmethod(coerce))
    sampler = StatevectorSampler()
    qc = ansatz(n=2, layers=1).assign_parameters([0.1, 0.2])
    internal0 = sum(errors.internal_error_counts.values())
    for attempt in range(3):  # the first describes the job; the repeats take the lean lane
        calls.clear()
        with pytest.raises(ValueError, match="shots must be positive"):
            sampler.run([qc], shots=-5)
        assert calls == [-5], attempt
    assert sum(errors.internal_error_counts.values()) == internal0
    rows = jobs_rows(qobs_run)
    assert [(r["status"], r["error_type"], r["submission_reason"]) for r in rows] == [
        ("error", "ValueError", "validation")] * 3


def test_opt_in_recording_turned_on_while_a_lean_job_runs_keeps_its_counts(qobs_run, untraced):
    """What is recorded of a job follows the settings in effect when it ends: opt-in recording turned on while
    a lean job runs (the pipeline restarts meanwhile) sends it the full way at its result(), counts kept."""
    from qiskit_aer.jobs import utils as aer_jobs
    from qobs_qiskit import _hooks

    sim = aer()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    sim.run(qc, shots=20).result()
    gate = threading.Event()
    aer_jobs.DEFAULT_EXECUTOR.submit(gate.wait, 30)  # the job waits behind this one
    job = sim.run(qc, shots=20)
    assert id(job) in _hooks._lean and not job.done()
    qobs.configure(store=str(qobs_run), flush_interval=0.05, record_results=True)
    gate.set()
    counts = job.result().get_counts()
    row = jobs_rows(qobs_run)[-1]
    assert json.loads(json.loads(row["attrs"])["qobs.job.counts"]) == [counts]


def test_the_fidelity_sample_of_noisy_jobs_does_not_depend_on_ideal_jobs_run_between(qobs_run, untraced):
    """The probe's seeded draw is made for noisy jobs only: ideal jobs (whose repeats take the lean lane and
    ask nobody) must not shift which noisy jobs it checks."""
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    from qobs._context import CTX_PROBE_DRAW

    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx"])
    noisy = AerSimulator(noise_model=noise, max_parallel_threads=1, seed_simulator=1)
    ideal = aer()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), ideal)
    draws: list = []

    def listener(rec) -> None:
        if rec.context.get(telemetry.CTX_BACKEND) is noisy:
            draws.append(rec.context.get(CTX_PROBE_DRAW))

    telemetry.add_job_listener(listener)
    try:
        seen = []
        for ideal_between in (0, 5):
            qobs.configure(store=str(qobs_run), flush_interval=0.05, fidelity_sample=0.5, fidelity_seed=7)
            draws.clear()
            for i in range(10):
                for _ in range(ideal_between if i == 3 else 0):
                    ideal.run(qc, shots=20).result()
                noisy.run(qc, shots=20).result()
            qobs.flush()
            seen.append(list(draws))
    finally:
        telemetry.remove_job_listener(listener)
    assert seen[0] == seen[1] and len(seen[0]) == 10
    assert True in seen[0] and False in seen[0]  # a real sample, not all or none


def test_a_lean_job_of_a_synchronous_backend_starts_when_it_was_submitted(qobs_run, untraced):
    """BasicSimulator runs the job inside run(): a repeated job (lean, then the usual path: no future to watch)
    must start when run() was called and end by the time it returned."""
    from qiskit.providers.basic_provider import BasicSimulator

    sim = BasicSimulator()
    qc = transpile(ansatz(n=3, layers=2).assign_parameters([0.1] * 6), sim)
    spans = []
    for _ in range(3):
        t_before = time.time()
        sim.run(qc, shots=2000, seed_simulator=1).result()
        spans.append((t_before, time.time()))
    rows = jobs_rows(qobs_run)
    assert len(rows) == 3
    for (t_before, t_after), r in zip(spans, rows, strict=True):
        assert t_before <= r["ts"] and r["ts"] + r["duration_s"] <= t_after


def test_a_lean_jobs_result_after_uninstrument_is_not_recorded(qobs_run, metric, untraced):
    """As on the full path: a job whose result() comes back after qobs.uninstrument() is no longer observed."""
    from qiskit_aer.jobs import utils as aer_jobs

    sim = AerSimulator(max_parallel_threads=1)
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    sim.run(qc, shots=10).result()
    labels = {"backend": "aer_simulator", "provider": "aer", "operation": "backend_run", "status": "ok"}
    gate = threading.Event()
    aer_jobs.DEFAULT_EXECUTOR.submit(gate.wait, 30)
    job = sim.run(qc, shots=10)
    waiting = threading.Thread(target=job.result)
    waiting.start()
    time.sleep(0.2)  # it waits inside the hooked result()
    qobs.flush()
    ok0 = metric("qobs_jobs_total", **labels)
    qobs.uninstrument()
    gate.set()
    waiting.join(30)
    telemetry.drain()
    assert metric("qobs_jobs_total", **labels) == ok0


def test_a_lean_job_whose_result_timed_out_is_recorded_when_it_ends_with_nothing_else_running(
        qobs_run, metric, untraced):
    """While result() waits, the job is off the finisher's list and the finisher, with nothing to look after,
    goes to sleep. A timeout puts the job back: the finisher must wake for it, and record it when it ends, with
    no other job, flush or exit to prompt it."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from qiskit_aer.jobs import utils as aer_jobs
    from qobs_qiskit import _hooks

    sim = AerSimulator(max_parallel_threads=1)
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    sim.run(qc, shots=10).result()  # described: the next one is lean
    labels = {"backend": "aer_simulator", "provider": "aer", "operation": "backend_run", "status": "ok"}
    ok0 = metric("qobs_jobs_total", **labels)
    gate = threading.Event()
    aer_jobs.DEFAULT_EXECUTOR.submit(gate.wait, 30)
    job = sim.run(qc, shots=10)
    slept, stop = threading.Event(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if _hooks._the_finisher is not None and _hooks._the_finisher.sleeping:
                slept.set()
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(FutureTimeout):
            job.result(timeout=2.5)  # longer than the finisher's idle rounds (1 s)
    finally:
        stop.set()
        watcher.join()
    assert slept.is_set()  # the precondition: the finisher slept while result() waited
    gate.set()
    deadline = time.monotonic() + 30
    while metric("qobs_jobs_total", **labels) - ok0 < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric("qobs_jobs_total", **labels) - ok0 == 1


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "full"])
def test_a_flush_sees_a_job_that_ended_before_its_result_was_asked_for(qobs_run, untraced, lean):
    """A job that has ended but whose result() has not been called waits out the finisher's grace (its result()
    may still come). A reader of what recording produces must not wait for that: qobs.flush() right after the
    job ends records it (on the lean lane, and on the full way, which a pass-through guard forces)."""
    sim = AerSimulator(max_parallel_threads=1)
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    sim.run(qc, shots=10).result()  # described: the next one may be lean

    def let_through(request):
        return None

    if not lean:
        telemetry.add_submit_guard(let_through)
    try:
        job = sim.run(qc, shots=10)
        deadline = time.monotonic() + 30
        while not job.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        qobs.flush()
        rows = jobs_rows(qobs_run)
        assert [r["job_id"] for r in rows][-1:] == [job.job_id()] and len(rows) == 2
        assert sum(job.result().get_counts().values()) == 10  # asked for later: not recorded again
        qobs.flush()
        assert len(jobs_rows(qobs_run)) == 2
    finally:
        telemetry.remove_submit_guard(let_through)


def test_a_block_budget_counts_a_job_that_ended_before_its_result_was_asked_for(qobs_run):
    """A finished job counts against a ``block`` budget at the next submission, its result() called or not."""
    from qobs import budgets
    from qobs.budgets import BudgetExceeded

    budgets.clear()
    qobs.budget("lab", shots=150, mode="block")
    try:
        sim = AerSimulator(max_parallel_threads=1)
        qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
        first = sim.run(qc, shots=100)
        deadline = time.monotonic() + 30
        while not first.done() and time.monotonic() < deadline:
            time.sleep(0.001)
        with pytest.raises(BudgetExceeded):
            sim.run(qc, shots=100)
    finally:
        budgets.clear()


def test_a_remembered_lean_submission_is_asked_again_when_anything_that_chose_its_lane_changes(
        qobs_run, untraced, monkeypatch):
    """A repeated lean job's submission is remembered (``_Fast``) so that the next identical one skips describing
    it. Each change below must send the next job through the description and lane choice again: a noise model or
    default shots set on the simulator's options, a circuit grown in place, other keyword arguments, a declared
    budget (its guard wants to see jobs), a tracer provider set by the user, opt-in recording turned on. Each job's
    lane and its row must be what a job described anew gets."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from qiskit_aer.noise import NoiseModel, depolarizing_error
    from qobs_qiskit import _hooks

    sim = aer()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    lanes: list[tuple[str, bool]] = []

    def run(label: str, **kw) -> None:
        job = sim.run(qc, **kw)
        lanes.append((label, id(job) in _hooks._lean))
        job.result()

    sim.set_options(shots=30)
    for _ in range(3):
        run("repeat")  # the first is described, the second remembered, the third remembered's hit
    assert id(sim) in _hooks._state.fast
    sim.set_options(shots=40)
    for label in ("default shots", "ideal", "ideal"):
        run(label)
    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx"])
    sim.set_options(noise_model=noise)
    run("noise model")
    sim.set_options(noise_model=None)  # Aer's default again: ideal
    run("ideal again")
    run("shots keyword", shots=50)
    run("shots keyword", shots=50)
    qc.x(0)  # grown in place: deeper
    run("grown", shots=50)
    run("grown", shots=50)
    qobs.budget("cap", shots=10**9, mode="block")
    run("budget", shots=50)
    qobs.budgets.remove("cap")
    run("no budget", shots=50)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider())
    run("tracer provider", shots=50)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    run("untraced", shots=50)
    qobs.configure(store=str(qobs_run), flush_interval=0.05, record_results=True)
    run("opt-in", shots=50)
    rows = jobs_rows(qobs_run)
    assert lanes == [("repeat", False), ("repeat", True), ("repeat", True), ("default shots", False),
                     ("ideal", True), ("ideal", True), ("noise model", False), ("ideal again", True),
                     ("shots keyword", False), ("shots keyword", True), ("grown", False), ("grown", True),
                     ("budget", False), ("no budget", True), ("tracer provider", False), ("untraced", True),
                     ("opt-in", False)]
    assert [r["shots"] for r in rows] == [30] * 3 + [40] * 5 + [50] * 9
    assert [r["shots_requested"] for r in rows] == [r["shots"] for r in rows]
    assert [r["depth"] for r in rows[10:]] == [qc.depth()] * 7 and rows[9]["depth"] < qc.depth()
    assert "qobs.job.counts" in json.loads(rows[-1]["attrs"])  # opt-in: the full way


def test_a_keyword_argument_that_cannot_be_compared_costs_the_user_nothing(qobs_run, untraced):
    """The remembered submission compares a job's keyword arguments with the last one's: a value whose ``==``
    raises (Aer passes unknown run options through) must not reach the user; the job is described anew."""
    from qobs_qiskit import _hooks

    class Incomparable:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("not comparable")

        __hash__ = object.__hash__

    sim = aer()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.3, 0.4]), sim)
    for _ in range(3):
        sim.run(qc, shots=25, tag=1).result()
    assert _hooks._state.fast[id(sim)].kwargs == {"shots": 25, "tag": 1}
    counts = sim.run(qc, shots=25, tag=Incomparable()).result().get_counts()
    assert sum(counts.values()) == 25
    assert [r["shots"] for r in jobs_rows(qobs_run)] == [25] * 4


def test_remembered_lean_submissions_record_what_describing_every_job_records(qobs_run, untraced, monkeypatch):
    """The same workload with and without remembered submissions (``_remember`` off) must record the same rows.
    The workload holds what a remembered submission must not take for granted (found in review): default shots
    passed as ``shots=None`` and changed later, on Aer and on a sampler's options; shots of another type that
    compares equal (numpy's); and changes made by another thread while a job is being submitted, after its
    lane was chosen (default shots, a tracer provider; made here from inside ``_lean_track``)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from qiskit.primitives import BackendSamplerV2
    from qobs_qiskit import _hooks

    qc = ansatz(n=2, layers=1).assign_parameters([0.3, 0.4])
    meanwhile: list = []
    track = _hooks._lean_track

    def racing_track(job, entry) -> None:
        track(job, entry)
        while meanwhile:
            meanwhile.pop(0)()

    monkeypatch.setattr(_hooks, "_lean_track", racing_track)

    def workload() -> list[tuple]:
        monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
        sim = aer()
        c = transpile(qc, sim)
        sim.set_options(shots=100)
        for _ in range(3):
            sim.run(c, shots=None).result()
        sim.set_options(shots=70)
        for _ in range(2):
            sim.run(c, shots=None).result()
        sampler = BackendSamplerV2(backend=sim, options={"default_shots": 40})
        for _ in range(3):
            sampler.run([c], shots=None).result()
        sampler.options.default_shots = 60
        sampler.run([c], shots=None).result()
        for shots in (30, 30, 30, np.int64(30), np.int64(30)):
            sim.run(c, shots=shots).result()
        for _ in range(2):
            sim.run(c).result()
        # changes made while a lean job that will be remembered is submitted (other keyword arguments first: the
        # next job is no hit, it is described and its lane chosen)
        sim.run(c, seed_simulator=5).result()
        meanwhile.append(lambda: sim.set_options(shots=90))
        for _ in range(3):
            sim.run(c).result()
        sim.run(c, seed_simulator=5).result()
        meanwhile.append(lambda: monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider()))
        for _ in range(3):
            sim.run(c).result()
        before = {r["id"] for r in seen}
        rows = [r for r in jobs_rows(qobs_run) if r["id"] not in before]
        seen.extend(rows)
        return [(r["operation"], r["shots_requested"], r["shots"], r["depth"], r["trace_id"] is not None)
                for r in rows]

    seen: list = []
    remembered = workload()
    assert _hooks._state.fast  # the workload did remember submissions
    monkeypatch.setattr(_hooks, "_remember", lambda *a: None)
    described = workload()
    assert remembered == described
    assert [r[1] for r in described][:9] == [100, 100, 100, 70, 70, 40, 40, 40, 60]
    assert [r[1:3] for r in described[-7:]] == [(70, 90)] + [(90, 90)] * 6  # the first was described before
    assert [r[4] for r in described[-3:]] == [False, True, True]  # a span for every job after the provider


def test_circuits_the_user_let_go_are_not_kept_alive_by_repeated_job_descriptions(qobs_run, untraced):
    """A repeated job's description is kept for reuse, but not its circuits nor its backend: a loop that binds
    new circuits and runs each a few times (lean lane, a noisy simulator's full path, a sampler) must leave none
    alive once the user lets them go and the jobs are recorded; nor a loop that makes a new simulator or
    sampler for each few jobs."""
    import gc

    from qiskit_aer.noise import NoiseModel, depolarizing_error
    from qobs_qiskit import _hooks

    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.05, 2), ["cx"])
    ideal, noisy = aer(), AerSimulator(noise_model=noise, max_parallel_threads=1, seed_simulator=1)
    sampler = AerSampler(seed=1)
    template = transpile(ansatz(n=2, layers=1), ideal)
    refs = []
    for i in range(6):
        qc = template.assign_parameters([0.1 * i, 0.2])
        for _ in range(3):
            ideal.run(qc, shots=20).result()
            noisy.run(qc, shots=20).result()
            sampler.run([qc], shots=20).result()
        refs.append(weakref.ref(qc))
        del qc
    qobs.flush()
    gc.collect()
    assert len(_hooks._state.descs) >= 6 and _hooks._state.fast  # descriptions and submissions were kept
    assert [r() is None for r in refs] == [True] * 6
    assert len(jobs_rows(qobs_run)) == 6 * 3 * 3
    made = []
    bound = template.assign_parameters([0.3, 0.4])
    for _ in range(4):
        sim, prim = aer(), AerSampler(seed=1)
        for _ in range(3):
            sim.run(bound, shots=20).result()
            prim.run([bound], shots=20).result()
        made += [weakref.ref(sim), weakref.ref(prim), weakref.ref(prim._backend)]
        del sim, prim
    qobs.flush()
    gc.collect()
    assert [r() is None for r in made] == [True] * 12


def test_a_synchronous_backends_job_whose_result_is_never_asked_for_is_recorded(qobs_run, untraced):
    """BasicSimulator's jobs have no future: the adapter settles them at submission (found in review: a
    same-named function had replaced that settle, so each such job counted an internal error and, unless
    result() was called, stayed unrecorded and held)."""
    from qiskit.providers.basic_provider import BasicSimulator
    from qobs_qiskit import _hooks

    from qobs import errors

    sim = BasicSimulator()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.1, 0.2]), sim)
    internal0 = sum(errors.internal_error_counts.values())
    for _ in range(3):
        sim.run(qc, shots=30, seed_simulator=1)  # result() never called
    qobs.flush()
    assert sum(errors.internal_error_counts.values()) == internal0
    assert [(r["status"], r["shots"]) for r in jobs_rows(qobs_run)] == [("ok", 30)] * 3
    assert not _hooks._pending


def test_a_lean_jobs_record_keeps_its_backend_when_the_user_let_the_simulator_go(qobs_run, untraced):
    """A kept description holds its backend weakly; a lean job recorded after the user dropped the simulator
    must still give listeners the backend object (found in review)."""
    import gc

    backends: list = []

    def listener(rec) -> None:
        backends.append(type(rec.context.get(telemetry.CTX_BACKEND)).__name__)

    telemetry.add_job_listener(listener)
    try:
        rec = telemetry._recorder
        for _ in range(2):
            sim = aer()
            qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.1, 0.2]), sim)
            with rec._lock:  # the recorder waits: the jobs are recorded after the simulator is let go
                rec._last = time.monotonic()
                for _ in range(3):
                    sim.run(qc, shots=10).result()
                del sim
                gc.collect()
            qobs.flush()
    finally:
        telemetry.remove_job_listener(listener)
    assert backends == ["AerSimulator"] * 6


def test_a_primitive_whose_options_raise_is_run_and_recorded_unchanged(qobs_run, untraced):
    """A primitive of the user's whose ``options`` cannot be read on its class (a lazy descriptor that raises
    KeyError there) runs as without qobs: nothing escapes into the program and every job is recorded. So
    does ``BackendEstimatorV2``, whose options have no run options to look for a noise model in."""
    class Lazy:
        def __get__(self, obj, cls=None):
            return obj.__dict__["_lazy"] if obj is not None else cls.__dict__["_lazy_cls"]

    class MySampler(BackendSamplerV2):
        options = Lazy()

        def __init__(self, backend):
            super().__init__(backend=backend)
            self.__dict__["_lazy"] = self._options

    sim = aer()
    qc = transpile(ansatz(n=2, layers=1).assign_parameters([0.1, 0.2]), sim)
    sampler = MySampler(sim)
    counts = [sampler.run([qc], shots=64).result()[0].data.meas.get_counts() for _ in range(3)]
    estimator = BackendEstimatorV2(backend=sim)
    for _ in range(2):
        estimator.run([(ansatz(n=2, layers=1, measure=False).assign_parameters([0.1, 0.2]),
                        SparsePauliOp("ZZ"))]).result()
    rows = jobs_rows(qobs_run)
    assert [r["operation"] for r in rows] == ["sampler"] * 3 + ["estimator"] * 2
    assert [r["shots"] for r in rows[:3]] == [64] * 3 and all(sum(c.values()) == 64 for c in counts)
