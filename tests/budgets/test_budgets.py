"""Budgets: refusal before submission, fallback, warnings, thresholds once across processes, bad files."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

import qobs
from qobs import budgets, telemetry
from qobs.budgets import BudgetExceeded
from qobs.errors import ConfigError
from tests.conftest import clean_env


class RecordingBackend:
    """Stands in for a remote backend: remembers every submission it receives."""

    name = "sim_manila"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def run(self, circuits: int, shots: int) -> None:
        self.calls.append((circuits, shots))


def submit(backend: RecordingBackend, circuits: int, shots: int) -> telemetry.JobRecord:
    """What an adapter does: ask the guards, then submit, then record the finished job."""
    decision = telemetry.check_submit(telemetry.SubmitRequest("backend_run", backend.name, "qobs.sim",
                                                              circuits * shots, circuits, backend_obj=backend))
    target = decision.fallback if decision is not None else backend
    target.run(circuits, shots)
    h = telemetry.start_job("backend_run", target.name, "qobs.sim", circuits=circuits, shots=circuits * shots)
    telemetry.finish_job(h)
    return h.record


def _events(store: Path, kind: str) -> list[dict]:
    qobs.flush()
    rows = sqlite3.connect(store).execute("SELECT subject, data FROM events WHERE kind = ? ORDER BY id", (kind,))
    return [{"subject": s, **json.loads(d)} for s, d in rows]


def test_block_refuses_the_job_that_would_cross_and_sends_nothing(qobs_run, metric):
    backend = RecordingBackend()
    qobs.budget("lab", shots=3000, mode="block", scope={"backend": "sim_*"})
    submit(backend, 2, 1000)          # 2000 of 3000
    before = list(backend.calls)
    with pytest.raises(BudgetExceeded) as ei:
        submit(backend, 2, 1000)      # would make 4000 > 3000
    msg = str(ei.value)
    assert "'lab'" in msg and "2 circuit(s) x 1000 shots" in msg and "1000 of 3000 shots left" in msg
    assert ei.value.left_shots == 1000 and isinstance(ei.value, telemetry.SubmissionRefused)
    assert backend.calls == before    # nothing reached the backend
    submit(backend, 1, 1000)          # exactly up to the limit is allowed
    assert metric("qobs_shot_budget_used_shots", budget="lab") == 3000
    assert metric("qobs_shot_budget_limit_shots", budget="lab") == 3000
    assert [e["request"] for e in _events(qobs_run, "budget_refused")] == [
        "backend_run job of 2 circuit(s) x 1000 shots on sim_manila (2000 shots)"]


def test_money_budget_blocks_on_the_estimate(qobs_run, metric):
    backend = RecordingBackend()
    qobs.budget("cash", usd="1.00", mode="block")
    submit(backend, 1, 1000)          # 0.60 USD (0.10 + 1000 x 0.0005)
    assert metric("qobs_money_budget_used_usd", budget="cash") == pytest.approx(0.60)
    with pytest.raises(BudgetExceeded, match=r"estimated 0\.6000 USD.*0\.4000 of 1\.00 USD left"):
        submit(backend, 1, 1000)
    assert len(backend.calls) == 1


def test_fallback_reroutes_and_records(qobs_run):
    class Fallback(RecordingBackend):
        name = "aer_simulator"

    fb = Fallback()
    backend = RecordingBackend()
    qobs.budget("fb", shots=1000, mode="fallback", fallback=fb, scope={"backend": "sim_*"})
    submit(backend, 1, 1000)
    rec = submit(backend, 1, 1000)
    assert backend.calls == [(1, 1000)] and fb.calls == [(1, 1000)]
    assert rec.backend == "aer_simulator" and rec.cost == 0
    assert [e["fallback"] for e in _events(qobs_run, "budget_fallback")] == ["aer_simulator"]


def test_warn_logs_once_and_lets_jobs_through(qobs_run, caplog):
    backend = RecordingBackend()
    qobs.budget("soft", shots=500)
    with caplog.at_level(logging.WARNING, logger="qobs"):
        for _ in range(3):
            submit(backend, 1, 400)
    assert len(backend.calls) == 3
    assert sum("exceeded by" in r.message for r in caplog.records) == 1
    assert len(_events(qobs_run, "budget_exceeded")) == 1


def test_scope_by_model_and_backend(qobs_run, metric):
    qobs.budget("m", shots=100_000, scope={"model": "qgan"})
    qobs.budget("b", shots=100_000, scope={"backend": "ibm_*"})
    for model in ("qgan", "other", None):
        h = telemetry.start_job("sampler", "sim_manila", "qobs.sim", circuits=1, shots=100, model=model)
        telemetry.finish_job(h)
    assert metric("qobs_shot_budget_used_shots", budget="m") == 100
    assert metric("qobs_shot_budget_used_shots", budget="b") == 0


def test_thresholds_fire_once_each_across_two_processes(tmp_path):
    store = tmp_path / "shared.db"
    start_at = time.time() + 3.0  # both workers import qobs, then start together
    env = clean_env()
    worker = Path(__file__).with_name("worker.py")
    procs = [subprocess.Popen([sys.executable, str(worker), str(store), "10", "50", str(start_at)], env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT SUM(shots) FROM budget_usage WHERE budget = 'shared'").fetchone()[0] == 1000
    events = [json.loads(d) for (d,) in conn.execute("SELECT data FROM events WHERE kind = 'budget_threshold'")]
    assert sorted(e["percent"] for e in events) == [25, 50, 75, 100]
    assert {e["kind"] for e in events} == {"shots"}
    used = sorted(int(e["used"]) for e in events)
    assert all(u >= t * 10 for u, t in zip(used, (25, 50, 75, 100), strict=True))
    jobs_per_pid = dict(conn.execute("SELECT pid, COUNT(*) FROM runs GROUP BY pid").fetchall())
    assert len(jobs_per_pid) == 2  # two processes really shared the store


def test_rolling_window(qobs_run, metric):
    b = qobs.budget("week", shots=1000, period="rolling:7d")
    assert b.window_s == 7 * 86400
    h = telemetry.start_job("sampler", "x", "p", circuits=1, shots=300)
    telemetry.finish_job(h)
    assert metric("qobs_shot_budget_used_shots", budget="week") == 300
    # usage older than the window no longer counts
    now = time.time()
    assert budgets._used(b, now + 8 * 86400) == (0, Decimal(0))


def test_many_small_updates_add_up_exactly(qobs_run):
    b = qobs.budget("many", shots=10**12, usd=10**6)
    n = 200
    for _ in range(n):
        budgets._add(b, 10, Decimal("0.01"), time.time())
    assert budgets._used(b, time.time()) == (10 * n, Decimal("0.01") * n)  # Decimal: no float drift


@pytest.mark.parametrize(("text", "needle"), [
    ("budgets:\n  - name: a\n    shots: -5\n", "budgets[0].shots"),
    ("budgets:\n  - name: a\n    shots: 5\n    mode: stop\n", "budgets[0].mode"),
    ("budgets:\n  - name: a\n    shots: 5\n    period: weekly\n", "budgets[0].period"),
    ("budgets:\n  - name: a\n    shots: 5\n    mode: fallback\n", "budgets[0].fallback"),
    ("budgets:\n  - name: a\n    shots: 5\n    scope: {team: x}\n", "budgets[0].scope"),
    ("budgets:\n  - name: a\n", "budgets[0]: give shots and/or usd"),
    ("budgets:\n  - name: a\n    shots: 5\n  - name: a\n    usd: 3\n", "budgets[1].name"),
    ("budgets: {", "not valid YAML"),
])
def test_bad_budget_file_is_one_line(tmp_path, text, needle):
    p = tmp_path / "budgets.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        budgets.parse_file(str(p))
    assert needle in str(ei.value) and str(p) in str(ei.value) and "\n" not in str(ei.value)
    env = clean_env()
    r = subprocess.run([sys.executable, "-m", "qobs.cli", "budgets", "check"], capture_output=True, text=True,
                       env={**env, "QOBS_BUDGETS": str(p)}, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_budget_file_loads_and_cli_reports_status(tmp_path, monkeypatch):
    p = tmp_path / "budgets.json"
    p.write_text(json.dumps({"budgets": [{"name": "team", "shots": 2000, "usd": 5, "period": "month",
                                          "scope": {"backend": "sim_*"}, "mode": "block"}]}))
    store = tmp_path / "runs.db"
    for var in [v for v in os.environ if v.startswith(("QOBS_", "OTEL_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("QOBS_BUDGETS", str(p))
    qobs.uninstrument()
    qobs.configure(store=str(store))
    try:
        qobs.instrument()
        assert [b.name for b in budgets.declared()] == ["team"]
        h = telemetry.start_job("sampler", "sim_manila", "qobs.sim", circuits=1, shots=500)
        telemetry.finish_job(h)
    finally:
        qobs.uninstrument()
        from qobs import runtime

        runtime._settings_override.clear()
    env = clean_env()
    r = subprocess.run([sys.executable, "-m", "qobs.cli", "budgets", "status", "--store", str(store)],
                       capture_output=True, text=True, env={**env, "QOBS_BUDGETS": str(p)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "500 shots" in r.stdout and "1500 of 2000 shots left" in r.stdout
