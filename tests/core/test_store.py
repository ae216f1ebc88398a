"""The embedded run store: kill -9 safety, concurrent writers, migrations, clear errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qobs import store
from qobs.errors import StoreError

WRITER = textwrap.dedent("""
    import sys, time
    import qobs
    from qobs import telemetry
    qobs.configure(store=sys.argv[1], flush_interval=float(sys.argv[3]))
    qobs.instrument()
    n = int(sys.argv[2])
    for i in range(n):
        h = telemetry.start_job("sampler", "b" + sys.argv[4], "p")
        h.record.shots, h.record.circuits = i, 1
        telemetry.finish_job(h)
        if n < 0 or sys.argv[5] == "slow":
            time.sleep(0.002)
        if i % 50 == 0:
            print(i, flush=True)
    print("done", flush=True)
    if sys.argv[5] == "slow":
        time.sleep(600)
""")


def _writer(db: Path, n: int, interval: float, tag: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(n), str(interval), tag, mode],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "QOBS_ADAPTERS": "none"})


def test_kill_9_keeps_every_row_flushed_before_the_kill(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    proc = _writer(db, 400, 0.2, "k", "slow")
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "done":
            break
    time.sleep(1.0)  # more than the flush interval (0.2 s): every row is committed by now
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    conn = store.connect(db, create=False)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 400
    assert sorted(r[0] for r in conn.execute("SELECT shots FROM jobs")) == list(range(400))
    run = store.resolve_run(conn, "latest")
    assert run["ended_at"] is None  # killed: the run reads as cut off, not finished


def test_kill_9_mid_write_leaves_a_store_that_opens(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    proc = _writer(db, 1_000_000, 0.01, "m", "fast")
    assert proc.stdout is not None
    first = None
    for line in proc.stdout:  # kill while it is still writing, after several flushes have happened
        first = first or time.monotonic()
        if int(line.split()[0]) >= 3000 and time.monotonic() - first > 0.5:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    conn = store.connect(db, create=False)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    assert n > 0
    # Each surviving row is whole (statements are atomic) and none is duplicated.
    shots = [r[0] for r in conn.execute("SELECT shots FROM jobs WHERE backend = 'bm' AND circuits = 1")]
    assert len(shots) == n == len(set(shots))


def test_concurrent_processes_write_one_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    procs = [_writer(db, 300, 0.05, str(i), "fast") for i in range(4)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip().endswith("done")
    conn = store.connect(db, create=False)
    per_backend = dict(conn.execute("SELECT backend, COUNT(*) FROM jobs GROUP BY backend").fetchall())
    assert per_backend == {"b0": 300, "b1": 300, "b2": 300, "b3": 300}
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'finished'").fetchone()[0] == 4


def test_migrations_upgrade_an_older_store_and_refuse_a_newer_one(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "runs.db"
    store.connect(db).close()
    extra = "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"
    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, extra))
    monkeypatch.setattr(store, "SCHEMA_VERSION", len(store.MIGRATIONS))
    conn = store.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION
    conn.execute("INSERT INTO notes (text) VALUES ('kept')")
    conn.close()
    monkeypatch.undo()
    with pytest.raises(StoreError, match="newer than this qobs"):
        store.connect(db)


def test_corrupt_and_unwritable_stores_give_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="corrupt or not a qobs store") as e:
        store.connect(bad)
    assert "\n" not in str(e.value)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; the CLI test covers a path under a file instead")
    with pytest.raises(StoreError):
        store.connect(ro / "sub" / "runs.db")


def test_writer_survives_a_bad_row_and_counts_it(tmp_path: Path) -> None:
    from qobs import errors

    w = store.Writer(tmp_path / "runs.db", 0.05)
    before = errors.internal_error_counts.get("store", 0)
    w.insert("jobs", {"run_id": "r", "ts": 1.0, "no_such_column": 1})
    w.flush()
    w.insert("jobs", {"run_id": "r", "ts": 2.0, "backend": "fine"})
    w.close()
    assert errors.internal_error_counts.get("store", 0) == before + 1
    rows = sqlite3.connect(tmp_path / "runs.db").execute("SELECT backend FROM jobs").fetchall()
    assert rows == [("fine",)]


def test_values_sqlite_cannot_bind_are_stored_as_before(tmp_path: Path) -> None:
    """Rows go to SQLite as they are; a batch holding a value SQLite cannot bind (a numpy integer, a
    Decimal) is encoded again, whole, and every row of it still lands."""
    from decimal import Decimal

    import numpy as np

    w = store.Writer(tmp_path / "runs.db", 60.0)
    cols = ("run_id", "ts", "shots", "cost", "attrs")
    w.insert_values("jobs", cols, ("r", 1.0, 10, "0.5", {"k": [1, 2]}))
    w.insert_values("jobs", cols, ("r", 2.0, np.int64(1024), Decimal("0.25"), {"d": Decimal("1.5")}))
    w.insert("jobs", {"run_id": "r", "ts": 3.0, "shots": 7, "cost": None, "attrs": None})
    w.close()
    conn = sqlite3.connect(tmp_path / "runs.db")
    got = conn.execute("SELECT ts, shots, typeof(shots), cost, attrs FROM jobs ORDER BY ts").fetchall()
    assert got == [(1.0, 10, "integer", "0.5", '{"k": [1, 2]}'), (2.0, 1024, "integer", "0.25", '{"d": "1.5"}'),
                   (3.0, 7, "integer", None, None)]


FORKING = textwrap.dedent("""
    import multiprocessing as mp, sys
    import qobs
    from qobs import telemetry

    def work(tag):
        for _ in range(5):
            h = telemetry.start_job("sampler", "child" + tag, "p"); h.record.shots = 10; telemetry.finish_job(h)

    if __name__ == "__main__":
        qobs.configure(store=sys.argv[1]); qobs.instrument()
        ps = [mp.get_context("fork").Process(target=work, args=(str(i),)) for i in range(2)]
        [p.start() for p in ps]; [p.join() for p in ps]
        work("parent")
        print("codes", [p.exitcode for p in ps])
""")


def test_forked_workers_write_to_the_parents_run_and_do_not_end_it(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    script = tmp_path / "forking.py"
    script.write_text(FORKING)
    proc = subprocess.run([sys.executable, str(script), str(db)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QOBS_ADAPTERS": "none"})
    assert proc.returncode == 0 and "codes [0, 0]" in proc.stdout, proc.stderr
    conn = store.connect(db, create=False)
    assert tuple(conn.execute("SELECT COUNT(DISTINCT run_id), COUNT(*) FROM jobs").fetchone()) == (1, 15)
    runs = conn.execute("SELECT status FROM runs").fetchall()
    assert [r[0] for r in runs] == ["finished"]


def test_a_locked_store_neither_blocks_the_user_on_the_lock_nor_loses_rows(tmp_path: Path) -> None:
    """Another process holds the store's write lock while the user's thread keeps recording.

    The lock is released only after the user's loop has finished. If an inline drain on the user's
    thread waited for the lock, it would wait out the busy timeout and drop its rows; it must instead
    hand them back to the writer thread, which commits them once the lock is gone.
    """
    import threading

    from qobs.store import Writer

    path = tmp_path / "runs.db"
    w = Writer(path, flush_interval=0.01)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Event()
    t = threading.Thread(target=lambda: (release.wait(60), holder.execute("COMMIT")))
    t.start()
    try:
        for i in range(200):  # the writer thread is stuck on the lock: these inserts drain inline, and give up
            w.insert("events", {"run_id": "r", "ts": float(i), "kind": "k", "subject": str(i)})
            if i % 20 == 0:
                threading.Event().wait(0.03)  # let the writer fall behind, as a busy program would
        assert w.inline_drains > 0  # the inline path ran while the store was locked
    finally:
        release.set()
        t.join()
    w.flush(30)
    w.close()
    conn = sqlite3.connect(path)
    assert sorted(int(s) for (s,) in conn.execute("SELECT subject FROM events")) == list(range(200))
    assert w.dropped == 0


def _asleep(w: store.Writer) -> None:
    deadline = time.monotonic() + 30
    while not w._sleeping and time.monotonic() < deadline:
        time.sleep(0.005)
    assert w._sleeping  # the precondition: an idle writer thread waits for the next row


def _committed(path: Path, n: int) -> int:
    deadline = time.monotonic() + 30
    got = 0
    while time.monotonic() < deadline:
        got = sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0]
        if got >= n:
            break
        time.sleep(0.02)
    return got


def test_rows_a_locked_store_hands_back_are_committed_by_a_sleeping_writer(tmp_path: Path) -> None:
    """A commit on the caller's thread (a pool worker's, ``commit_now``) that finds the store locked gives its
    rows back to the writer thread. An idle writer thread sleeps: it must wake for them and commit them once
    the lock is gone, with nothing else happening (no later row, no close)."""
    path = tmp_path / "runs.db"
    w = store.Writer(path, flush_interval=0.01)
    try:
        _asleep(w)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        w.insert("events", {"run_id": "r", "ts": 1.0, "kind": "k", "subject": "handed back"})
        # the commit takes the row and waits for the lock longer than the thread's idle rounds: the thread finds
        # nothing queued meanwhile and goes back to sleep before the row is handed back
        w.commit_now(busy_ms=300)
        holder.execute("COMMIT")
        holder.close()
        assert _committed(path, 1) == 1
    finally:
        w.close()


def test_the_first_rows_after_a_pause_are_not_committed_on_the_callers_thread(tmp_path: Path) -> None:
    """Rows queued at once by many threads after a pause wake the sleeping writer; none of the callers commits
    them itself (an inline drain is for a writer thread that falls behind, not one that slept)."""
    import threading

    path = tmp_path / "runs.db"
    w = store.Writer(path, flush_interval=0.01)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave as finely as they can
    try:
        for pause in range(100):
            _asleep(w)
            time.sleep(0.08)  # a real pause: the last commit is older than a late writer's (0.07 s here)
            go = threading.Barrier(16)

            def row(i: int, pause: int = pause, go: threading.Barrier = go) -> None:
                go.wait()
                w.insert("events", {"run_id": "r", "ts": 1.0, "kind": "k", "subject": f"{pause}.{i}"})

            threads = [threading.Thread(target=row, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert _committed(path, 1600) == 1600
        assert w.inline_drains == 0
    finally:
        sys.setswitchinterval(switch)
        w.close()


OPEN_AT = textwrap.dedent("""
    import sys, time
    from qobs.store import connect
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
    connect(sys.argv[1]).close()
""")


def test_processes_opening_a_new_store_at_once_all_get_it(tmp_path: Path) -> None:
    """A new store's switch to WAL locks without SQLite's busy handler: opening it at once must not fail."""
    for round_ in range(4):
        path = tmp_path / f"new-{round_}.db"
        start_at = time.time() + 1.0  # all three have imported qobs by then
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(path), str(start_at)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
        assert store.connect(path, create=False).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_large_batch_lands_once_in_order_and_a_refused_row_costs_only_itself(tmp_path: Path) -> None:
    """A batch is committed in chunks of a few fixed sizes (300 rows: 128 + 128 + 32 + 8 + 4). A row
    SQLite refuses (``ts`` is NOT NULL) is dropped and counted alone; its chunk's other rows land."""
    from qobs import errors

    w = store.Writer(tmp_path / "runs.db", 60.0)  # nothing commits before the flush: one batch
    before = errors.internal_error_counts.get("store", 0)
    cols = ("run_id", "ts", "shots", "attrs")
    for i in range(300):
        w.insert_values("jobs", cols, ("r", None if i == 150 else float(i), i, {"k": i % 3, "flag": "x"}))
    w.insert_values("jobs", cols, ("r", 300.0, 300, {"k": 1}))
    w.insert_values("jobs", cols, ("r", 301.0, 301, {"k": True}))  # true, not the memo's {"k": 1} (1 == True)
    w.flush()
    w.close()
    got = sqlite3.connect(tmp_path / "runs.db").execute("SELECT shots, attrs FROM jobs ORDER BY id").fetchall()
    want = [(i, f'{{"k": {i % 3}, "flag": "x"}}') for i in range(300) if i != 150] + [(300, '{"k": 1}'),
                                                                                         (301, '{"k": true}')]
    assert got == want
    assert w.dropped == 1 and errors.internal_error_counts.get("store", 0) == before + 1


def test_an_older_store_gets_the_fidelity_event_index_and_its_queries_use_it(tmp_path: Path) -> None:
    from qobs import fidelity

    db = tmp_path / "runs.db"
    conn = store.connect(db)
    conn.execute("DROP INDEX events_kind_subject")  # a store made before the index existed (same schema version)
    conn.executemany("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('r', 0, ?, ?, '{}')",
                     [(k, f"b{i % 50}") for i in range(2000) for k in ("fidelity_check", "calibration")])
    conn.close()
    conn = store.connect(db)
    assert "events_kind_subject" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    plans = [" ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args)) for sql, args in (
        ("SELECT MAX(id) FROM events WHERE kind = ? AND subject = ?", (fidelity.REBASELINE, "b1")),
        ("SELECT id FROM events WHERE subject = ? AND kind = 'fidelity_check' AND id > ? ORDER BY id DESC LIMIT 1",
         ("b1", 0)))]
    assert all("events_kind_subject" in p for p in plans), plans
    assert fidelity.epoch(conn, "b1") == 0
    conn.close()
    before = db.stat().st_mtime_ns, db.read_bytes()
    store.connect(db).close()  # up to date: opening it again writes nothing
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before


def test_the_optional_index_never_waits_for_a_writer_nor_builds_on_a_large_table(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "runs.db"
    conn = store.connect(db)
    conn.execute("DROP INDEX events_kind_subject")
    conn.executemany("INSERT INTO events (run_id, ts, kind, subject) VALUES ('r', 0, 'calibration', 'b')",
                     [()] * 50)
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a running job's writer holds the store
    opened = store.connect(db)  # waiting for the lock would end in "database is locked": the writer keeps it

    def indexes() -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}

    assert "events_kind_subject" not in indexes()
    assert opened.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 50
    writer.execute("COMMIT")
    monkeypatch.setattr(store, "INDEX_BUILD_MAX_ROWS", 10)  # a large table: left without
    store.connect(db).close()
    assert "events_kind_subject" not in indexes()
    monkeypatch.undo()
    store.connect(db).close()  # the next open with the store free builds it
    assert "events_kind_subject" in indexes()


def test_columns_empty_in_a_whole_batch_are_left_out_and_every_row_reads_back_the_same(tmp_path: Path) -> None:
    """The writer leaves out of its statements the columns that are None in every row of a group (they
    default to NULL): each row reads back exactly as given, whichever columns its group left out, and a
    NOT NULL column left empty in a whole group is still refused, row by row, and counted."""
    from qobs import errors

    w = store.Writer(tmp_path / "runs.db", 60.0)  # one batch at the flush
    before = errors.internal_error_counts.get("store", 0)
    cols = ("run_id", "ts", "backend", "shots", "queue_s", "job_id", "attrs")
    given = [("r", 1.0, "a", 10, None, None, None), ("r", 2.0, "a", None, None, "j2", None),
             ("r", 3.0, None, 30, None, None, {"k": 1})]
    for row in given:
        w.insert_values("jobs", cols, row)
    w.insert_values("jobs", ("run_id", "ts"), ("r", 4.0))
    w.insert_values("jobs", ("run_id", "ts", "shots"), ("r", None, None))  # NOT NULL ts empty: refused alone
    w.insert_values("jobs", ("run_id", "ts", "shots"), ("r", 5.0, None))
    w.flush()
    w.close()
    got = sqlite3.connect(tmp_path / "runs.db").execute(
        "SELECT run_id, ts, backend, shots, queue_s, job_id, attrs FROM jobs ORDER BY id").fetchall()
    assert got == [("r", 1.0, "a", 10, None, None, None), ("r", 2.0, "a", None, None, "j2", None),
                   ("r", 3.0, None, 30, None, None, '{"k": 1}'), ("r", 4.0, None, None, None, None, None),
                   ("r", 5.0, None, None, None, None, None)]
    assert w.dropped == 1 and errors.internal_error_counts.get("store", 0) == before + 1
    assert store._without_empty_columns(cols, given[:2]) == (
        ("run_id", "ts", "backend", "shots", "job_id"), [("r", 1.0, "a", 10, None), ("r", 2.0, "a", None, "j2")])
    empty = [(None, None), (None, None)]  # nothing set: left whole, for SQLite to refuse with its own reason
    assert store._without_empty_columns(("run_id", "ts"), empty) == (("run_id", "ts"), empty)
