"""`qobs runs prune`: old runs go with their jobs, steps and events; recent runs, budget usage and each
backend's fidelity baseline stay; bad input is one line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from qobs.fidelity import stored_baseline
from qobs.store import connect
from tests.conftest import clean_env

DAY = 86400.0


def qobs(*args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    return subprocess.run([sys.executable, "-m", "qobs.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _run(conn: sqlite3.Connection, rid: str, started: float, ended: float | None, jobs: int,
         status: str = "ok") -> None:
    conn.execute("INSERT INTO runs (run_id, started_at, ended_at, status) VALUES (?, ?, ?, ?)",
                 (rid, started, ended, status))
    conn.executemany("INSERT INTO jobs (run_id, ts, backend, status) VALUES (?, ?, 'aer_simulator', 'ok')",
                     [(rid, started + i) for i in range(jobs)])
    conn.execute("INSERT INTO steps (run_id, model, step, ts) VALUES (?, 'm', 0, ?)", (rid, started))
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES (?, ?, 'budget_threshold', 'b', '{}')",
                 (rid, started))


def _store(path: Path) -> float:
    now = time.time()
    conn = connect(path)
    _run(conn, "old-ended", now - 40 * DAY, now - 40 * DAY + 60, 5)
    _run(conn, "old-killed", now - 41 * DAY, None, 3, status="running")  # killed -9: never ended
    _run(conn, "long-lived", now - 45 * DAY, None, 2, status="running")
    conn.execute("INSERT INTO jobs (run_id, ts, backend, status) VALUES ('long-lived', ?, 'aer_simulator', 'ok')",
                 (now - 60,))  # started long ago, still writing a minute ago
    _run(conn, "recent", now - DAY, now - DAY + 60, 4)
    # the fidelity baseline of sim_a was learnt in an old run; it must survive the prune
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('old-ended', ?, 'fidelity_check', "
                 "'sim_a', ?)", (now - 40 * DAY, json.dumps({"fidelity": 0.9, "baseline": 0.93, "source": "learned"})))
    conn.execute("INSERT INTO budget_usage (budget, bucket, start, shots) VALUES ('b', 'x', ?, 7)", (now,))
    conn.close()
    return now


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("runs", "jobs", "steps", "events", "budget_usage")}


def test_prune_deletes_old_runs_and_keeps_the_rest(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    _store(store)
    before = _counts(store)
    dry = qobs("runs", "prune", "--older-than", "30d", "--dry-run", "--store", str(store))
    assert dry.returncode == 0, dry.stderr
    assert "old-ended" in dry.stdout and "old-killed" in dry.stdout and "2 runs to delete" in dry.stdout
    assert "long-lived" not in dry.stdout and "recent" not in dry.stdout
    assert _counts(store) == before  # a dry run deletes nothing

    r = qobs("runs", "prune", "--older-than", "30d", "--vacuum", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "deleted 2 runs: 8 jobs, 2 steps, 2 events" in r.stdout
    conn = sqlite3.connect(store)
    assert sorted(x for (x,) in conn.execute("SELECT run_id FROM runs")) == ["long-lived", "recent"]
    assert {x for (x,) in conn.execute("SELECT DISTINCT run_id FROM jobs")} == {"long-lived", "recent"}
    after = _counts(store)
    assert (after["jobs"], after["steps"], after["budget_usage"]) == (7, 2, 1)
    assert stored_baseline(connect(store, create=False), "sim_a")["baseline"] == 0.93


def test_keep_last_keeps_the_newest_runs(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    _store(store)
    r = qobs("runs", "prune", "--keep-last", "1", "--store", str(store))
    assert r.returncode == 0, r.stderr
    conn = sqlite3.connect(store)
    # the old run that ended goes; runs that never ended are only ever pruned by age (they may be running)
    assert sorted(x for (x,) in conn.execute("SELECT run_id FROM runs")) == ["long-lived", "old-killed", "recent"]


def test_events_go_with_their_run_when_no_baseline_is_kept(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    conn = connect(store)
    _run(conn, "old", time.time() - 40 * DAY, time.time() - 40 * DAY, 2)
    conn.close()
    r = qobs("runs", "prune", "--older-than", "30d", "--store", str(store))
    assert r.returncode == 0, r.stderr
    assert "deleted 1 runs: 2 jobs, 1 steps, 1 events" in r.stdout
    assert _counts(store)["events"] == 0


def test_prune_needs_a_rule_and_a_good_duration(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    _store(store)
    for args, needle in ((["--store", str(store)], "--older-than"), (["--older-than", "a while", "--store", str(store)],
                                                                      "--older-than")):
        r = qobs("runs", "prune", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr
    assert _counts(store)["runs"] == 4
