"""Metrics egress with real parts: a real Pushgateway, the served endpoint, a taken port, the app's provider."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from tests.conftest import clean_env, free_port, wait_http

JOBS = textwrap.dedent("""
    import qobs
    from qobs import telemetry
    qobs.instrument()
    for i in range(7):
        h = telemetry.start_job("sampler", "aer_simulator", "aer")
        h.record.shots, h.record.circuits = 100, 1
        telemetry.finish_job(h)
""")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = clean_env()
    env.update({"QOBS_STORE": str(tmp_path / "runs.db"), **extra})
    return env


def test_batch_job_pushes_to_a_real_pushgateway_at_exit(pushgateway_bin: str, tmp_path: Path) -> None:
    port = free_port()
    # Debian's build persists to /var/lib by default: keep this gateway's state in the test's own folder.
    gw = subprocess.Popen([pushgateway_bin, f"--web.listen-address=127.0.0.1:{port}",
                           f"--persistence.file={tmp_path / 'pushgateway.db'}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready")
        proc = subprocess.run([sys.executable, "-c", JOBS], capture_output=True, text=True, timeout=120,
                              env=_env(tmp_path, QOBS_PUSHGATEWAY_URL=f"http://127.0.0.1:{port}",
                                       OTEL_SERVICE_NAME="nightly-qgan"))
        assert proc.returncode == 0, proc.stderr
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        gw.terminate()
        gw.wait(10)
    lines = [ln for ln in text.splitlines() if ln.startswith("qobs_jobs_total{")]
    assert len(lines) == 1, lines
    assert 'job="nightly-qgan"' in lines[0] and 'run_id="' in lines[0] and 'status="ok"' in lines[0]
    assert lines[0].endswith(" 7")


SERVE = textwrap.dedent("""
    import json, os, sys, urllib.request
    import qobs
    from qobs import errors, telemetry
    qobs.instrument()
    h = telemetry.start_job("sampler", "aer_simulator", "aer"); h.record.shots = 5; telemetry.finish_job(h)
    port = os.environ["OTEL_EXPORTER_PROMETHEUS_PORT"]
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError as exc:
        body = f"unreachable: {exc}"
    print(json.dumps({"served": "qobs_shots_total" in body, "internal": errors.internal_error_counts,
                      "answer": 6 * 7}))
""")


def test_metrics_are_served_when_asked(tmp_path: Path) -> None:
    import json

    port = free_port()
    proc = subprocess.run([sys.executable, "-c", SERVE], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path, OTEL_METRICS_EXPORTER="prometheus",
                                   OTEL_EXPORTER_PROMETHEUS_PORT=str(port)))
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["served"] and out["answer"] == 42


def test_a_taken_port_costs_the_user_nothing(tmp_path: Path) -> None:
    import json

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-c", SERVE], capture_output=True, text=True, timeout=120,
                              env=_env(tmp_path, OTEL_METRICS_EXPORTER="prometheus",
                                       OTEL_EXPORTER_PROMETHEUS_PORT=str(port)))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["answer"] == 42 and out["internal"].get("prometheus_server") == 1
    assert "Traceback" not in proc.stderr


APP_PROVIDER = textwrap.dedent("""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    import qobs
    from qobs import telemetry
    qobs.instrument()
    with trace.get_tracer("app").start_as_current_span("epoch"):
        telemetry.finish_job(telemetry.start_job("sampler", "aer_simulator", "aer"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    job = spans["sampler aer_simulator"]
    assert job.parent.span_id == spans["epoch"].context.span_id
    assert trace.get_tracer_provider() is provider
    print("ok")
""")


def test_the_applications_tracer_provider_is_reused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", APP_PROVIDER], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
