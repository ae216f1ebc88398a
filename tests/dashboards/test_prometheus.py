"""Every dashboard query, run by a real Prometheus scraping a real instrumented process.

The process (``traffic.py``) runs Qiskit Aer jobs (``SamplerV2`` and ``AerSimulator.run``) through
the Qiskit adapter under ``qobs.instrument()``, inside ``qobs.training`` steps (with a share of
failing jobs and refused submissions), and serves its metrics
with ``OTEL_METRICS_EXPORTER=prometheus``. Prometheus (Debian's 2.42) scrapes it every second; each
panel and variable query of the committed dashboards goes through ``/api/v1/query`` (or the label
values API) with Grafana's variables substituted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qobs.dashboards import expressions
from tests.conftest import clean_env, free_port, wait_http

HERE = Path(__file__).resolve().parent
COMMITTED = HERE.parents[1] / "dashboards"
SUBSTITUTE = {"$__rate_interval": "1m", "$__range": "5m", "$backend": ".*", "$model": ".*", "$objective": "0.99"}
# Panels that must show data for the traffic generated here: (dashboard, panel title, refId).
KEY_PANELS = {
    ("qobs-executive", "Job success (30d)", "A"),
    ("qobs-executive", "Shots per second by backend", "A"),
    ("qobs-oncall", "Job duration p50 / p95", "B"),          # p95
    ("qobs-oncall", "Jobs within latency thresholds", "A"),  # fraction under 0.2 s
    ("qobs-oncall", "Error-budget burn rate (1h / 6h)", "A"),
    ("qobs-oncall", "Job error ratio by backend", "A"),
    ("qobs-oncall", "Submission errors by reason", "A"),
    ("qobs-executive", "Training progress (KL divergence)", "A"),
    ("qobs-debug", "Circuit depth", "A"),
    ("qobs-debug", "Losses (generator / discriminator)", "A"),
    ("qobs-debug", "Gradient SNR (barren plateau below 1)", "A"),
    ("qobs-debug", "qobs build info", "A"),
}
WAIT_S = 120.0  # bound on start-up and first scrapes on a busy machine


def substitute(expr: str) -> str:
    for var, value in SUBSTITUTE.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as exc:  # 400/422 carry the PromQL error as JSON
        return json.load(exc)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[str]:
    """Base URL of a Prometheus scraping a live ``traffic.py`` (both stopped at teardown)."""
    metrics_port, prom_port = free_port(), free_port()
    env = clean_env()
    env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_PORT=str(metrics_port),
               OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", QOBS_STORE=str(tmp_path / "runs.db"),
               QOBS_FIDELITY_SAMPLE="1", OMP_NUM_THREADS="1")
    config = tmp_path / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      "scrape_configs:\n  - job_name: qobs\n"
                      f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    procs: list[subprocess.Popen[Any]] = []
    try:
        with open(tmp_path / "traffic.err", "wb") as err:
            traffic = subprocess.Popen([sys.executable, str(HERE / "traffic.py")], env=env, cwd=tmp_path,
                                       stdout=subprocess.PIPE, stderr=err, text=True)
        procs.append(traffic)
        with open(tmp_path / "prometheus.log", "wb") as log:
            procs.append(subprocess.Popen(
                [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=subprocess.DEVNULL, stderr=log))
        url = f"http://127.0.0.1:{prom_port}"
        wait_http(f"{url}/-/ready", timeout=WAIT_S)
        assert traffic.stdout is not None
        line = traffic.stdout.readline()  # blocks until the first step's jobs are recorded (or the process dies)
        assert line.strip() == "ready", (tmp_path / "traffic.err").read_text()[-3000:]
        yield url
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _query(url: str, expr: str) -> dict[str, Any]:
    return _get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _wait_for_data(url: str, expr: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not _query(url, expr).get("data", {}).get("result"):
        assert time.monotonic() < deadline, f"no data for {expr} after {WAIT_S} s"
        time.sleep(0.5)


def _models() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(COMMITTED.glob("*.json"))}


@pytest.mark.real_tools
@pytest.mark.slow
def test_every_dashboard_query_runs_on_a_real_prometheus(prometheus: str) -> None:
    models = _models()
    p95 = dict(expressions(models["qobs-oncall"]))["qobs-oncall / Job duration p50 / p95 / B"]
    _wait_for_data(prometheus, substitute(p95))  # rates need two scrapes inside the window
    time.sleep(2)                    # a couple more scrapes so every family has two samples

    assert _query(prometheus, "sum(rate(qobs_jobs_total[1m]")["status"] == "error"  # the harness sees errors
    errors, empty, values = [], [], {}
    for model in models.values():
        for where, expr in expressions(model):
            if expr.startswith("label_values("):
                metric, label = expr[len("label_values("):-1].split(", ")
                body = _get(f"{prometheus}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": metric}))
                if body.get("status") != "success":
                    errors.append(f"{where}: {body}")
                elif not body["data"]:
                    empty.append(where)
                continue
            body = _query(prometheus, substitute(expr))
            if body.get("status") != "success":
                errors.append(f"{where}: {body.get('errorType')}: {body.get('error')}\n  {expr}")
                continue
            result = body["data"]["result"]
            values[where] = [float(r["value"][1]) for r in result]
            if not result:
                empty.append(where)
    assert not errors, "\n".join(errors)

    missing = [f"{uid} / {title} / {ref}" for uid, title, ref in sorted(KEY_PANELS)
               if f"{uid} / {title} / {ref}" in empty or f"{uid} / {title} / {ref}" not in values]
    assert not missing, f"key panels without data: {missing}"
    assert not [w for w in empty if w.endswith(("$backend", "$model"))], empty
    print(f"\n{len(values)} panel queries ran; empty for this traffic (no such events):", *empty, sep="\n  ")

    (success,) = values["qobs-executive / Job success (30d) / A"]
    assert 0.5 < success < 1.0  # two ok jobs per step, two failing ones every fourth step
    # Jobs a budget blocked (five every fourth step) count neither way: ok / (ok + error) from the raw series.
    raw = {s: sum(float(r["value"][1]) for r in _query(
        prometheus, f'sum(increase(qobs_jobs_total{{status="{s}"}}[30d]))')["data"]["result"])
        for s in ("ok", "error", "blocked")}
    assert raw["blocked"] > raw["error"] > 0, raw
    assert success == pytest.approx(raw["ok"] / (raw["ok"] + raw["error"]), rel=0.05)
    assert all(v > 0 for v in values["qobs-executive / Shots per second by backend / A"])
    assert all(0 < v < 60 and math.isfinite(v) for v in values["qobs-oncall / Job duration p50 / p95 / B"])
    assert all(0 <= v <= 1 for v in values["qobs-oncall / Jobs within latency thresholds / A"])
    (burn,) = values["qobs-oncall / Error-budget burn rate (1h / 6h) / A"]
    assert burn == pytest.approx((1 - success) / (1 - 0.99), rel=0.2)  # same jobs, 1h vs 30d window
    assert all(v > 0 for v in values["qobs-oncall / Submission errors by reason / A"])
