"""Spans and metrics reach a real OTLP receiver over gRPC and HTTP, with the contract attributes.

The instrumented program runs in a child process, as a user's would: OpenTelemetry allows one
global tracer provider per process, and the exit flush is part of what is tested.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qobs.contract import Attr, Span
from tests.conftest import clean_env
from tests.core.otlp_receiver import GrpcReceiver, HttpReceiver

PROGRAM = textwrap.dedent("""
    from decimal import Decimal
    import qobs
    from qobs import telemetry
    from qobs.contract import Span

    qobs.instrument()
    with telemetry.tracer().start_as_current_span(Span.TRAINING_STEP) as step:
        h = telemetry.start_job("sampler", "aer_simulator", "aer", shots_requested=1024)
        h.record.circuits, h.record.shots, h.record.bindings = 2, 2048, 2
        h.record.job_id = "job-123"
        h.record.stats = [telemetry.CircuitStats(width=4, depth=17, two_qubit_gates=6)]
        h.record.cost, h.record.cost_source = Decimal("0.25"), "catalog"
        telemetry.finish_job(h)
        bad = telemetry.start_job("sampler", "aer_simulator", "aer")
        bad.record.status, bad.record.error_type = "error", "AerError"
        telemetry.finish_job(bad)
        print("step", format(step.get_span_context().span_id, "016x"))
    print("user result 42")
""")


def _run(env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.update({"QOBS_STORE": str(tmp_path / "runs.db"), "OTEL_SERVICE_NAME": "qobs-test",
                "OTEL_RESOURCE_ATTRIBUTES": "team=qml,deployment.environment=test", **env_extra})
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_and_metrics_arrive_over_otlp(protocol: str, tmp_path: Path) -> None:
    receiver = GrpcReceiver() if protocol == "grpc" else HttpReceiver()
    try:
        proc = _run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                     "OTEL_METRICS_EXPORTER": "otlp"}, tmp_path)
        assert proc.returncode == 0, proc.stderr
    finally:
        receiver.stop()
    step_span_id = proc.stdout.split("step ")[1].split()[0]
    spans = receiver.got.spans
    by_name = {s["name"]: s for s in spans}
    job_name = Span.job("sampler", "aer_simulator")
    assert {job_name, Span.TRAINING_STEP} <= set(by_name), [s["name"] for s in spans]
    jobs = [s for s in spans if s["name"] == job_name]
    assert len(jobs) == 2
    ok = next(s for s in jobs if s["attributes"][Attr.JOB_STATUS] == "ok")
    err = next(s for s in jobs if s["attributes"][Attr.JOB_STATUS] == "error")
    a = ok["attributes"]
    assert a[Attr.OPERATION] == "sampler" and a[Attr.PROVIDER] == "aer" and a[Attr.BACKEND] == "aer_simulator"
    assert a[Attr.SHOTS] == 2048 and a[Attr.SHOTS_REQUESTED] == 1024 and a[Attr.CIRCUITS] == 2
    assert a[Attr.WIDTH] == 4 and a[Attr.DEPTH] == 17 and a[Attr.TWO_QUBIT_GATES] == 6
    assert a[Attr.JOB_ID] == "job-123"
    assert a[Attr.COST_AMOUNT] == 0.25 and a[Attr.COST_CURRENCY] == "USD" and a[Attr.COST_SOURCE] == "catalog"
    assert Attr.RUN_ID in a
    assert err["attributes"][Attr.ERROR_TYPE] == "AerError" and err["status_code"] == 2  # STATUS_CODE_ERROR
    # Jobs nest under the caller's training-step span, in one trace.
    assert ok["parent_span_id"] == step_span_id == by_name[Span.TRAINING_STEP]["span_id"]
    assert ok["trace_id"] == by_name[Span.TRAINING_STEP]["trace_id"]
    res = ok["resource"]
    assert res["service.name"] == "qobs-test" and res["team"] == "qml"
    assert {"qobs_jobs_total", "qobs_shots_total", "qobs_job_duration_seconds"} <= receiver.got.metric_names


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_dead_collector_changes_nothing_for_the_user(protocol: str, tmp_path: Path) -> None:
    # Same program with no exporter configured: the dead collector must not change what the user sees.
    plain = subprocess.run([sys.executable, "-c", PROGRAM.replace("qobs.instrument()", "pass")],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "QOBS_STORE": str(tmp_path / "plain.db")})
    dead = _run({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
                 "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_METRICS_EXPORTER": "otlp"}, tmp_path)
    assert dead.returncode == plain.returncode == 0, dead.stderr
    assert dead.stdout.splitlines()[-1] == plain.stdout.splitlines()[-1] == "user result 42"
    assert "Traceback" not in dead.stderr
    # Nothing listens there: the exit flush is skipped (it would retry until its timeout), and said once per signal.
    assert dead.stderr.count("refused the connection; spans not yet exported are dropped") == 1, dead.stderr
    assert dead.stderr.count("refused the connection; metrics not yet exported are dropped") == 1, dead.stderr


RESTART = textwrap.dedent("""
    import qobs
    from qobs import telemetry

    qobs.instrument()
    telemetry.finish_job(telemetry.start_job("sampler", "before", "p"))
    qobs.configure(run_name="restarted")  # restarts the pipeline with new settings
    telemetry.finish_job(telemetry.start_job("sampler", "after_configure", "p"))
    qobs.uninstrument()
    qobs.instrument()
    telemetry.finish_job(telemetry.start_job("sampler", "after_reinstrument", "p"))
""")


def test_spans_and_metrics_keep_flowing_after_the_pipeline_restarts(tmp_path: Path) -> None:
    """A process sets its global tracer and meter providers once: a restart must reuse ours, not shut-down ones."""
    receiver = HttpReceiver()
    try:
        env = clean_env()
        env.update(QOBS_STORE=str(tmp_path / "runs.db"), OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRICS_EXPORTER="otlp")
        proc = subprocess.run([sys.executable, "-c", RESTART], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    finally:
        receiver.stop()
    names = sorted(s["name"] for s in receiver.got.spans)
    assert names == sorted(Span.job("sampler", b) for b in ("before", "after_configure", "after_reinstrument"))
    # and so must OTLP metrics: a restart used to shut the meter provider down, so later jobs were never exported
    backends = {attrs.get("backend") for name, attrs in receiver.got.metric_points if name == "qobs_jobs_total"}
    assert {"before", "after_configure", "after_reinstrument"} <= backends
