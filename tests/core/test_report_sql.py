"""The report and run summary aggregate jobs in SQLite (a run may hold millions of jobs); on a seeded
random store they must give exactly what a plain in-memory computation over every row gives."""

from __future__ import annotations

import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from qobs import report
from qobs.store import _quantile, connect, rows, run_summary
from qobs.telemetry import JOB_COLUMNS

BACKENDS = ["aer_simulator", "ibm_torino", "sim_manila", None, ""]
OPERATIONS = ["backend_run", "sampler", "estimator"]
FAILURES = [("error", "AerError", None), ("error", "TimeoutError", None), ("cancelled", None, None),
            ("blocked", "BudgetExceeded", "budget"), ("error", "ValueError", "validation")]


def _store(path: Path, seed: int, n: int) -> None:
    rng = random.Random(seed)
    conn = connect(path)
    t0 = 1_700_000_000.0
    for rid in ("other", "r"):
        conn.execute("INSERT INTO runs (run_id, started_at) VALUES (?, ?)", (rid, t0))
    q = f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({','.join('?' * len(JOB_COLUMNS))})"
    for i in range(n):
        status, etype, reason = rng.choice(FAILURES) if rng.random() < 0.15 else ("ok", None, None)
        row = dict.fromkeys(JOB_COLUMNS)
        row.update(run_id=rng.choice(("r", "r", "r", "other")), ts=t0 + i * 0.01 + rng.random() * 0.005,
                   backend=rng.choice(BACKENDS), provider=rng.choice(("aer", "ibm", None)),
                   operation=rng.choice(OPERATIONS), purpose="forward", circuits=rng.choice((1, 2, None)),
                   shots=rng.choice((1024, 256, None)), status=status, error_type=etype, submission_reason=reason,
                   duration_s=rng.choice((None, 0.001, 0.002, round(rng.random(), 3))),  # ties and unknowns
                   queue_s=rng.choice((None, None, 1.5, round(rng.random() * 60, 1))),
                   cost=rng.choice((None, "0", "1.6000", "0.0125", "3.2")),
                   cost_currency=rng.choice(("USD", "USD", "EUR", None)))
        conn.execute(q, tuple(row[c] for c in JOB_COLUMNS))
    for i, kind in enumerate(("fidelity_check", "calibration_change", "budget_threshold")):
        conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('r', ?, ?, 'ibm_torino', ?)",
                     (t0 + 3 + i, kind, '{"result": "fail", "fidelity": 0.5, "baseline": 0.9}'))
    conn.execute("INSERT INTO steps (run_id, model, step, ts, samples, metrics) VALUES ('r', 'm', 0, ?, 10, '{}')",
                 (t0,))
    conn.close()


# --- the reference: every row in memory ---------------------------------------------------------
def _summary_backends(jobs: list[dict]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in jobs:
        b = out.setdefault(r["backend"] or "unknown", {
            "provider": r["provider"], "jobs": 0, "circuits": 0, "shots": 0, "errors": 0, "cancelled": 0,
            "blocked": 0, "cost": Decimal(0), "currency": None, "unpriced_jobs": 0, "d": [], "q": []})
        b["jobs"] += 1
        b["circuits"] += r["circuits"] or 0
        b["shots"] += r["shots"] or 0
        for s, key in (("error", "errors"), ("cancelled", "cancelled"), ("blocked", "blocked")):
            b[key] += r["status"] == s
        if r["cost"] is None:
            b["unpriced_jobs"] += 1
        else:
            b["cost"] += Decimal(r["cost"])
            b["currency"] = r["cost_currency"] or b["currency"]
        if r["duration_s"] is not None:
            b["d"].append(r["duration_s"])
        if r["queue_s"] is not None:
            b["q"].append(r["queue_s"])
    for b in out.values():
        b["cost"] = str(b["cost"])
        d, q = b.pop("d"), b.pop("q")
        b.update(job_duration_p50_s=_quantile(d, 0.5), job_duration_p95_s=_quantile(d, 0.95),
                 queue_p95_s=_quantile(q, 0.95))
    return out


def _errors(jobs: list[dict]) -> list[dict[str, Any]]:
    c = Counter((j["backend"], j["operation"], j["status"], j["error_type"], j["submission_reason"])
                for j in jobs if j["status"] != "ok")
    return [{"backend": b, "operation": o, "status": s, "error_type": e, "submission_reason": r, "jobs": n}
            for (b, o, s, e, r), n in c.most_common()]


def _latency(jobs: list[dict]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = {}
    for j in jobs:
        groups.setdefault((j["backend"], j["operation"]), []).append(j)
    out = []
    for (b, o), js in sorted(groups.items(), key=lambda kv: (kv[0][0] is not None, kv[0])):  # NULL first, as SQL
        d = [j["duration_s"] for j in js if j["duration_s"] is not None]
        q = [j["queue_s"] for j in js if j["queue_s"] is not None]
        out.append({"backend": b, "operation": o, "jobs": len(js), "p50_s": _quantile(d, 0.5),
                    "p95_s": _quantile(d, 0.95), "p99_s": _quantile(d, 0.99), "queue_p95_s": _quantile(q, 0.95)})
    return out


def _failure_lines(t0: float, jobs: list[dict]) -> list[tuple[float, str]]:
    failed = [j for j in jobs if j["status"] != "ok"]
    out, seen = [], set()
    for j in failed:
        key = (j["backend"], j["status"], j["error_type"], j["submission_reason"])
        if key in seen:
            continue
        seen.add(key)
        n = sum(1 for x in failed if (x["backend"], x["status"], x["error_type"], x["submission_reason"]) == key)
        why = (j["error_type"] or j["status"]) + (f", refused at submission ({j['submission_reason']})"
                                                 if j["submission_reason"] else "")
        out.append((j["ts"] - t0, f"first {j['status']} on {j['backend']}: {why} ({n} in all)"))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sql_aggregates_equal_an_in_memory_pass_over_every_job(tmp_path: Path, seed: int) -> None:
    _store(tmp_path / "runs.db", seed, 3000)
    conn = connect(tmp_path / "runs.db", create=False)
    jobs = rows(conn, "jobs", "r")
    assert 2000 < len(jobs) < 2500  # the other run's jobs are left out

    summary = run_summary(conn, "r")
    assert summary["backends"] == _summary_backends(jobs)
    assert list(summary["backends"]) == list(_summary_backends(jobs))  # in order of first appearance
    assert summary["totals"]["jobs"] == len(jobs)

    r = report.build(conn, "r")
    assert r["errors"] == _errors(jobs)
    assert r["latency"] == _latency(jobs)
    priced = [j for j in jobs if j["cost"] is not None]
    assert r["cost"] == {"total": str(sum((Decimal(j["cost"]) for j in priced), Decimal(0))),
                         "currency": priced[0]["cost_currency"], "samples": 10,
                         "shots": sum(j["shots"] or 0 for j in jobs),
                         "per_sample": f"{sum((Decimal(j['cost']) for j in priced), Decimal(0)) / 10:.6g}",
                         "unpriced_jobs": len(jobs) - len(priced)}
    t0 = r["run"]["started_at"]
    got = {(x["t"], x["what"]) for x in r["timeline"]}
    expected = [(jobs[0]["ts"] - t0, f"first job on {jobs[0]['backend']}"), *_failure_lines(t0, jobs)]
    assert set(expected[:report.TIMELINE_LIMIT - 6]) <= got  # the timeline is cut at its limit
    refused = Counter(j["submission_reason"] for j in jobs if j["submission_reason"])
    for reason, n in refused.items():
        assert f"{n} submissions refused ({reason})" in r["findings"]


def test_a_large_run_is_reported_without_loading_its_jobs(tmp_path: Path) -> None:
    """Memory, not time, is asserted (no wall-clock limits here): the report of a run of 200k jobs must
    not hold them (the old report built a dict per job: about 1.6 GB for a million)."""
    import tracemalloc

    path = tmp_path / "big.db"
    conn = connect(path)
    conn.execute("INSERT INTO runs (run_id, started_at) VALUES ('big', ?)", (time.time(),))
    q = f"INSERT INTO jobs ({','.join(JOB_COLUMNS)}) VALUES ({','.join('?' * len(JOB_COLUMNS))})"
    row = dict.fromkeys(JOB_COLUMNS)
    conn.execute("BEGIN")
    conn.executemany(q, ((*(row | {"run_id": "big", "ts": i * 1e-3, "backend": "aer_simulator", "provider": "aer",
                                   "operation": "backend_run", "status": "ok", "shots": 1024, "cost": "0",
                                   "duration_s": (i % 997) * 1e-6}).values(),) for i in range(200_000)))
    conn.execute("COMMIT")
    tracemalloc.start()
    r = report.build(conn, "big")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    durations = [(i % 997) * 1e-6 for i in range(200_000)]
    assert r["totals"]["jobs"] == 200_000
    assert [r["latency"][0][k] for k in ("p50_s", "p95_s", "p99_s")] == [_quantile(durations, q)
                                                                         for q in (.5, .95, .99)]
    assert peak < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"
