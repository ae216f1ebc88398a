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
