"""Job spans nest under the caller's span, or under a traceparent carried in ``circuit.metadata``.

OpenTelemetry lets a process set the global tracer provider once: the fixture sets an SDK provider
with an in-memory exporter if none is set yet, or adds its exporter to the SDK provider already set
(qobs reuses the application's provider, so its spans reach the exporter either way).
"""

from __future__ import annotations

import pytest

pytest.importorskip("qiskit_aer")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from qiskit import transpile
from qiskit.primitives import StatevectorSampler
from qiskit_aer import AerSimulator

import qobs
from qobs import telemetry
from tests.adapters.test_qiskit_jobs import ansatz
from tests.conftest import run_python

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        pytest.skip("the global tracer provider is not the SDK's")
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    return _exporter


@pytest.fixture
def spans(exporter, qobs_run):
    exporter.clear()
    return exporter


def by_name(exp: InMemorySpanExporter, name: str):
    qobs.flush()  # jobs are recorded (spans ended) off the user's thread
    return [s for s in exp.get_finished_spans() if s.name == name]


def test_job_span_nests_under_the_callers_span_with_contract_attributes(spans):
    tracer = trace.get_tracer("training-loop")
    with tracer.start_as_current_span("train-step") as step:
        res = StatevectorSampler(seed=1).run([ansatz().assign_parameters([0.1] * 6)], shots=64).result()
    (job,) = by_name(spans, "sampler statevector")
    assert job.parent is not None and job.parent.span_id == step.get_span_context().span_id
    assert job.context.trace_id == step.get_span_context().trace_id
    a = job.attributes
    assert a["quantum.operation.name"] == "sampler" and a["quantum.provider.name"] == "qiskit"
    assert a["quantum.response.shots"] == sum(res[0].data.meas.get_counts().values()) == 64
    assert a["quantum.request.circuits"] == 1 and a["quantum.job.status"] == "ok"
    assert a["quantum.job.id"] == a["quantum.job.id"].strip() and a["quantum.job.id"]


def test_traceparent_in_circuit_metadata_parents_the_job_span(spans):
    tracer = trace.get_tracer("training-loop")
    with tracer.start_as_current_span("remote-step") as step:
        tp = telemetry.traceparent()
    qc = ansatz().assign_parameters([0.2] * 6)
    qc.metadata = {"traceparent": tp}
    AerSimulator(max_parallel_threads=1).run(qc, shots=10).result()  # no active span here
    (job,) = by_name(spans, "backend_run aer_simulator")
    assert job.parent.span_id == step.get_span_context().span_id
    assert job.context.trace_id == step.get_span_context().trace_id


def test_transpile_span_reports_depth_and_two_qubit_gates_before_and_after(spans):
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    qc = ansatz(n=4)
    out = transpile(qc, FakeManilaV2(), seed_transpiler=1)
    (span,) = by_name(spans, "quantum.transpile")
    a = span.attributes
    count = lambda c: sum(1 for i in c.data if len(i.qubits) == 2 and i.operation.name != "barrier")  # noqa: E731
    assert (a["quantum.circuit.depth_before_transpile"], a["quantum.circuit.depth"]) == (qc.depth(), out.depth())
    assert a["quantum.circuit.two_qubit_gates_before_transpile"] == count(qc)
    assert a["quantum.circuit.two_qubit_gates"] == count(out)
    assert a["quantum.backend.name"] == "fake_manila" and a["quantum.circuit.width"] == 5


_ENV_TRACE = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
import qobs
from qobs.training import step
qobs.configure(store="off")
qobs.instrument()
from qiskit import QuantumCircuit, transpile
from qiskit_aer import AerSimulator
sim = AerSimulator(max_parallel_threads=1)
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
qc = transpile(qc, sim)                                 # a transpile span, no active span
sim.run(qc, shots=10).result()                          # a job, no active span
with step("qgan", 1):
    sim.run(qc, shots=10).result()                      # a job inside a training step
with trace.get_tracer("app").start_as_current_span("app-work"):
    sim.run(qc, shots=10).result()                      # a job under the program's own span
qobs.flush()
print(json.dumps([{"name": s.name, "trace": f"{s.context.trace_id:032x}", "span": f"{s.context.span_id:016x}",
                   "parent": f"{s.parent.span_id:016x}" if s.parent else None} for s in exporter.get_finished_spans()]))
"""


def _env_spans(traceparent: str) -> list[dict]:
    import json

    r = run_python("-c", _ENV_TRACE, timeout=180, TRACEPARENT=traceparent, TRACESTATE="ci=1")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_spans_join_the_trace_named_by_the_traceparent_environment_variable():
    """OpenTelemetry's environment-variable carrier: a CI runner or a parent process sets TRACEPARENT, and
    the run's spans that have no parent in the program join that trace."""
    ci_trace, ci_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans = _env_spans(f"00-{ci_trace}-{ci_span}-01")
    by = {}
    for s in spans:
        by.setdefault(s["name"], []).append(s)
    (tsp,) = by["quantum.transpile"]
    (stp,) = by["qobs.training.step"]
    (app,) = by["app-work"]
    jobs = by["backend_run aer_simulator"]
    assert tsp["parent"] == ci_span and stp["parent"] == ci_span  # qobs's own root spans join the pipeline
    assert sorted(j["parent"] for j in jobs) == sorted([ci_span, stp["span"], app["span"]])
    # the program's own span is the program's (it did not read TRACEPARENT): a job under it stays under it
    assert app["parent"] is None and app["trace"] != ci_trace
    assert {s["trace"] for s in spans if s is not app and s["parent"] != app["span"]} == {ci_trace}


def test_a_malformed_traceparent_variable_is_ignored():
    spans = _env_spans("00-not-a-trace-01")
    jobs = [s for s in spans if s["name"] == "backend_run aer_simulator"]
    assert len(jobs) == 3
    assert jobs[0]["parent"] is None  # no parent, no crash: its own trace


_OWN_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

class Count(SpanExporter):
    n = 0
    def export(self, spans):
        Count.n += len(spans)
        return SpanExportResult.SUCCESS
    def shutdown(self):
        print("exported", Count.n, flush=True)

provider = TracerProvider()  # made after qobs started (qobs run): its atexit shutdown is registered later
provider.add_span_processor(SimpleSpanProcessor(Count()))
trace.set_tracer_provider(provider)
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
sim = AerSimulator(max_parallel_threads=1)
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
for _ in range(20):
    sim.run(qc, shots=10).result()
job = sim.run(qc, shots=10)  # its result is never asked for: recorded at exit
"""


def test_a_provider_the_program_makes_under_qobs_run_gets_every_job_span_before_it_shuts_down(tmp_path):
    """The SDK shuts a tracer provider down at exit (atexit, in reverse order of registration). Made after
    qobs started, it used to shut down before qobs ended the spans of the last jobs: 18 of 20 were dropped,
    each with an "already shutdown" warning."""
    import sys

    script = tmp_path / "train.py"
    script.write_text(_OWN_PROVIDER)
    r = run_python("-m", "qobs.cli", "run", "--", sys.executable, str(script), timeout=180, QOBS_STORE="off")
    assert r.returncode == 0, r.stderr
    assert "shutdown" not in r.stderr.lower(), r.stderr
    assert r.stdout.split() == ["exported", "21"]  # every job's span, the unresulted one too


_EXIT_ORDER = """
import atexit, multiprocessing, sys
import qobs
import qobs.training
qobs.configure(store=sys.argv[1])
qobs.instrument()
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator
sim = AerSimulator(max_parallel_threads=1)
qc = QuantumCircuit(2)
qc.h(0)
qc.measure_all()
def last_words():  # the program's own work at exit, registered early: a training step qobs records
    with qobs.training.step(model="m", step=99) as s:
        s.record(g_loss=0.5)
atexit.register(last_words)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())  # made after qobs started
for _ in range(3):
    sim.run(qc, shots=10).result()
sim.run(qc, shots=10)  # never asked for: recorded at exit


def child():  # a forked child with a job of its own that nobody asks for either
    import time
    job = sim.run(qc, shots=3)
    deadline = time.monotonic() + 60
    while job.status().name != "DONE" and time.monotonic() < deadline:
        time.sleep(0.001)


if __name__ == "__main__":
    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join()
"""


def test_exit_work_is_done_once_in_the_run_that_owns_the_jobs(tmp_path):
    """Recording the last jobs before the program's tracer provider shuts down must not move qobs's exit
    hook ahead of the program's own atexit work (whose job belongs to the run, not to a second one), nor
    make a forked child record its parent's jobs again."""
    import sqlite3

    store = tmp_path / "runs.db"
    r = run_python("-c", _EXIT_ORDER, str(store), timeout=180)
    assert r.returncode == 0, r.stderr
    conn = sqlite3.connect(store)
    (run,) = [r for (r,) in conn.execute("SELECT run_id FROM runs")]  # a forked child records into its parent's
    shots = sorted(s for (s,) in conn.execute("SELECT shots FROM jobs WHERE run_id = ?", (run,)))
    assert shots == [3, 10, 10, 10, 10], shots  # each unresulted job once: the parent's, and the child's own
    steps = conn.execute("SELECT run_id, step FROM steps").fetchall()
    assert steps == [(run, 99)], steps  # the program's exit work is in its run, not in a second one
