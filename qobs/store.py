"""The embedded run store: SQLite in WAL mode, written off the hot path.

One row per run (provenance), per job, per training step and per event. Instrumentation only
enqueues rows; a background writer commits them in batches at least every ``flush_interval``
(at most one second), so a ``kill -9`` loses at most the last interval and leaves a store that
opens. Several processes may write one store at once (WAL plus a busy timeout). The schema is
versioned; ``MIGRATIONS`` upgrades older stores in place.
"""

from __future__ import annotations

import json
import operator
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qobs.errors import StoreError, report_internal

MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, name TEXT, started_at REAL NOT NULL, ended_at REAL, status TEXT,
        exit_code INTEGER, qobs_version TEXT, python TEXT, qiskit TEXT, qiskit_aer TEXT, pennylane TEXT,
        host TEXT, pid INTEGER, argv TEXT, cwd TEXT, seed INTEGER, git_commit TEXT, service TEXT, extra TEXT
    );
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, ts REAL NOT NULL, backend TEXT, provider TEXT,
        operation TEXT, purpose TEXT, circuits INTEGER, bindings INTEGER, shots INTEGER,
        shots_requested INTEGER, depth INTEGER, width INTEGER, two_qubit_gates INTEGER, depth_before INTEGER,
        transpile_s REAL, queue_s REAL, execution_s REAL, duration_s REAL, status TEXT, error_type TEXT,
        submission_reason TEXT, cost TEXT, cost_currency TEXT, cost_source TEXT, job_id TEXT, session_id TEXT,
        trace_id TEXT, span_id TEXT, attrs TEXT
    );
    CREATE INDEX jobs_run ON jobs (run_id);
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, model TEXT, step INTEGER, ts REAL NOT NULL,
        duration_s REAL, samples INTEGER, cost TEXT, trace_id TEXT, metrics TEXT
    );
    CREATE INDEX steps_run ON steps (run_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, run_id TEXT, ts REAL NOT NULL, kind TEXT NOT NULL, subject TEXT, data TEXT
    );
    CREATE INDEX events_run ON events (run_id);
    """,
    # v2: budget state shared by the processes using the store (qobs.budgets)
    """
    CREATE TABLE budget_usage (
        budget TEXT NOT NULL, bucket TEXT NOT NULL, start REAL NOT NULL, shots INTEGER NOT NULL DEFAULT 0,
        usd TEXT NOT NULL DEFAULT '0', PRIMARY KEY (budget, bucket)
    );
    CREATE TABLE budget_thresholds (
        budget TEXT NOT NULL, period TEXT NOT NULL, kind TEXT NOT NULL, pct INTEGER NOT NULL, ts REAL NOT NULL,
        pid INTEGER, PRIMARY KEY (budget, period, kind, pct)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# Indexes added after a schema version shipped. Kept out of MIGRATIONS: a version step would make older
# qobs refuse a store it can still use (an index changes no table), so they are made when missing.
INDEXES: tuple[tuple[str, str], ...] = (
    # a backend's fidelity events by kind (its rebaseline epoch, the check that decides its baseline)
    ("events_kind_subject", "CREATE INDEX IF NOT EXISTS events_kind_subject ON events (kind, subject, id)"),
)
# Building an index holds the store's write lock (about 1 s per million events): larger tables are left
# without, and an open never waits for, nor holds up, a writer to build one.
INDEX_BUILD_MAX_ROWS = 200_000
TABLES = ("runs", "jobs", "steps", "events")
_JSON_COLUMNS = {"argv", "extra", "attrs", "metrics", "data"}


BUSY_TIMEOUT_S = 10.0


def connect(path: str | os.PathLike[str], *, create: bool = True,
            timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (and migrate) a store. Raises StoreError with one clear line."""
    p = Path(path)
    if not create and not p.exists():
        raise StoreError(f"no run store at {p} (set QOBS_STORE or run something under `qobs run` first)")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(p, timeout=timeout, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open run store {p}: {_reason(exc)}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        _until_unlocked(lambda: _check_is_a_store(conn, p, create), timeout)  # another process may be making it
        # Switching a new store to WAL takes an exclusive lock without SQLite's busy handler: two processes
        # opening a new store at once see "database is locked" at once. Retry (bounded) as the handler would.
        _until_unlocked(lambda: conn.execute("PRAGMA journal_mode = WAL"), timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        _until_unlocked(lambda: _migrate(conn), timeout)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"cannot use run store {p}: {_reason(exc)}") from None
    conn.row_factory = sqlite3.Row
    return conn


def _check_is_a_store(conn: sqlite3.Connection, p: Path, create: bool) -> None:
    """Refuse a SQLite file that is not a qobs store (another program's database must not gain our tables
    nor be switched to WAL), and, when only reading, an empty one (nothing was recorded there)."""
    # One statement, one snapshot: another process may commit a new store's tables and version in between.
    version, names = conn.execute("SELECT (SELECT user_version FROM pragma_user_version), (SELECT group_concat("
                                  "name, ', ') FROM (SELECT name FROM sqlite_master WHERE type = 'table' "
                                  "ORDER BY 1 LIMIT 3))").fetchone()
    if version:
        return
    if names:
        conn.close()
        raise StoreError(f"{p} is not a qobs run store (it holds other tables: {names}); "
                         "point QOBS_STORE or --store elsewhere")
    if not create:
        conn.close()
        raise StoreError(f"no run store at {p} (the file is empty; run something under `qobs run` first)")


def _until_unlocked(fn: Any, timeout: float) -> Any:
    """``fn()``, retried with a short backoff while the store is locked, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _reason(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    if "not a database" in msg or "malformed" in msg:
        return f"{msg} (the file is corrupt or not a qobs store; move it aside to start a new one)"
    if "readonly" in msg or "unable to open" in msg:
        return f"{msg} (check the path and its permissions, or set QOBS_STORE)"
    return msg


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"store schema v{version} is newer than this qobs understands "
                                    f"(v{SCHEMA_VERSION}); upgrade qobs")
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    missing = [stmt for name, stmt in INDEXES if name not in have]
    if missing and version and (conn.execute("SELECT MAX(id) - MIN(id) FROM events").fetchone()[0] or 0) \
            > INDEX_BUILD_MAX_ROWS:
        missing = []
    if version < SCHEMA_VERSION:
        _write_schema(conn, missing)
        return
    if not missing:
        return  # a read: opening an up-to-date store writes nothing
    busy = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute("PRAGMA busy_timeout = 0")  # an optional index: try now, or at a later open
    try:
        _write_schema(conn, missing)
    except sqlite3.OperationalError as exc:  # another writer holds the store, or we may only read it
        if not any(w in str(exc) for w in ("locked", "busy", "readonly")):
            raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy)}")


def _write_schema(conn: sqlite3.Connection, indexes: list[str]) -> None:
    """The migrations a store lacks, then ``indexes``, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see the new version
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for i in range(version, SCHEMA_VERSION):
            for stmt in filter(str.strip, MIGRATIONS[i].split(";")):
                conn.execute(stmt)
        for stmt in indexes:
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_dumps = json.JSONEncoder(default=str).encode  # one encoder: json.dumps(default=...) builds one per call
_json_memo: dict[tuple[tuple[str, Any], ...], str] = {}


def _json(value: Any) -> str:
    """``_dumps(value)``; a small dict of str keys and str or int values (the attributes most jobs carry,
    repeated job after job) is encoded once."""
    if type(value) is dict and len(value) <= 4:
        for k, v in value.items():
            if type(k) is not str or (type(v) is not str and type(v) is not int):
                return _dumps(value)
        key = tuple(value.items())  # exact types checked: equal keys encode alike (1 == True is excluded)
        out = _json_memo.get(key)
        if out is None:
            if len(_json_memo) >= 1024:
                _json_memo.clear()
            out = _json_memo[key] = _dumps(value)
        return out
    return _dumps(value)


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (_dumps(v) if k in _JSON_COLUMNS and v is not None else
                str(v) if v is not None and not isinstance(v, (int, float, str, bytes)) else v)
            for k, v in row.items()}


def _params(cols: tuple[str, ...], chunk: list[tuple[Any, ...]], strict: bool) -> list[Any]:
    """The bound parameters of a multi-row insert. The fast form encodes only the JSON columns and
    leaves other values to SQLite; ``strict`` also turns every value SQLite cannot bind into text
    (the retry when the fast form meets a numpy integer, a Decimal, ...)."""
    if strict:
        return [v for vals in chunk for v in _encode(dict(zip(cols, vals, strict=True))).values()]
    js = [i for i, c in enumerate(cols) if c in _JSON_COLUMNS]
    if not js:
        return [v for vals in chunk for v in vals]
    out: list[Any] = []
    for vals in chunk:
        row = list(vals)
        for i in js:
            if row[i] is not None:
                row[i] = _json(row[i])
        out.extend(row)
    return out


class Writer:
    """Batches rows and commits them, normally from a background thread.

    Each group of rows is one multi-row statement in autocommit mode, so it is atomic on its own
    and no SQLite lock is held between statements. That matters under the GIL: a main thread that
    keeps re-taking the GIL (printing progress between CPU-bound steps) can starve the writer
    thread indefinitely; then ``insert`` notices the writer is late and drains inline on its own
    connection, keeping the flush interval bound that ``kill -9`` safety rests on.
    """

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 0.5, max_pending: int = 100_000) -> None:
        self.path = Path(os.path.abspath(path))  # its thread opens it later, maybe after a chdir
        self.flush_interval = min(max(flush_interval, 0.01), 1.0)
        self.max_pending = max_pending
        # (table, columns, values, op): columns and values of an insert; columns None and a dict otherwise.
        self._q: queue.SimpleQueue[tuple[str, Any, Any, str]] = queue.SimpleQueue()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._conn()  # open (and migrate) now, so a bad path fails here, in the caller
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._sleeping = False  # idle: the thread waits for a queued row to wake it
        self._in_flight = 0
        self._idle = threading.Condition()
        self._last_drain = time.monotonic()
        self._starved_after = 2 * self.flush_interval + 0.05
        self.inline_drains = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="qobs-store-writer", daemon=True)
        self._thread.start()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
            with self._conn_lock:
                self._conns.append(conn)
        return conn

    def insert(self, table: str, row: dict[str, Any]) -> None:
        """Queue a row (never blocks on disk; past ``max_pending`` queued rows, drops and counts)."""
        self.insert_values(table, tuple(row), tuple(row.values()))

    def insert_values(self, table: str, columns: tuple[str, ...], values: tuple[Any, ...]) -> None:
        """``insert`` for callers that keep their columns in one tuple (the per-job row)."""
        if self._q.qsize() >= self.max_pending:
            self.dropped += 1
            report_internal("store_backlog", OverflowError(f"{self.max_pending} rows pending; dropping"))
            return
        if not self._put((table, columns, values, "insert")) and \
                time.monotonic() - self._last_drain > self._starved_after:
            self.inline_drains += 1
            self._drain(busy_ms=INLINE_BUSY_MS)  # on the user's thread: never wait long for a lock

    def commit_now(self, busy_ms: int | None = None) -> None:
        """Commit what is queued, on this thread, waiting at most ``busy_ms`` (default ``INLINE_BUSY_MS``) for a
        locked store: rows that find it locked go back to the writer thread."""
        self._drain(busy_ms=INLINE_BUSY_MS if busy_ms is None else busy_ms)

    def insert_once(self, table: str, row: dict[str, Any]) -> None:
        """Queue an insert that keeps an existing row with the same key (a run shared by processes)."""
        self._put((table, None, row, "insert_once"))

    def update_run(self, row: dict[str, Any]) -> None:
        """Queue an update of the run ``row["run_id"]`` (non-null fields only)."""
        self._put(("runs", None, row, "update"))

    def _put(self, item: tuple[str, Any, Any, str]) -> bool:
        """Queue ``item``; True when that woke the sleeping thread. Every row goes through here."""
        self._q.put(item)
        if self._sleeping:
            self._wake_up()
            return True
        return False

    def _wake_up(self) -> None:
        """The first row after a pause: the sleeping thread commits it at once (not late: no inline drain).
        The clock is set before the flag falls, so a producer that sees the flag down also sees it fresh."""
        self._last_drain = time.monotonic()
        self._sleeping = False
        self._wake.set()

    def flush(self, timeout: float = 5.0) -> None:
        """Commit everything queued so far, from the calling thread; wait for rows in flight."""
        self._drain()
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(0.05)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.flush(timeout)
        with self._conn_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()

    IDLE_AFTER = 4  # empty rounds before the thread sleeps until a row is queued (an idle program: no wake-ups)

    def _loop(self) -> None:
        empty = 0
        while not self._stop.is_set():
            if empty >= self.IDLE_AFTER:
                self._sleeping = True
                if self._q.empty() and not self._stop.is_set():  # a row queued before the flag was up: awake
                    self._wake.wait()
                self._sleeping = False
                empty = 0
            else:
                self._wake.wait(self.flush_interval)
            self._wake.clear()
            empty = 0 if not self._q.empty() else empty + 1
            self._drain()

    def _drain(self, busy_ms: int | None = None) -> None:
        batch: list[tuple[str, Any, Any, str]] = []
        with self._idle:
            while True:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            self._in_flight += len(batch)
        try:
            if batch:
                self._write(batch, busy_ms)
        finally:
            self._last_drain = time.monotonic()
            with self._idle:
                self._in_flight -= len(batch)
                self._idle.notify_all()

    def _write(self, batch: list[tuple[str, Any, Any, str]], busy_ms: int | None = None) -> None:
        """Commit ``batch``. With ``busy_ms`` (an inline drain), a locked store gives the rows back to the
        queue for the writer thread instead of making the caller wait for the lock."""
        conn = self._conn()
        if busy_ms is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        try:
            for table, op, cols, rows in _groups(batch):
                done = [0]  # rows committed so far (a group is committed in chunks)
                try:
                    self._exec(conn, table, op, cols, rows, done)
                except sqlite3.OperationalError as exc:
                    left = rows[done[0]:]
                    if busy_ms is not None and ("locked" in str(exc) or "busy" in str(exc)):
                        for row in left:
                            self._put((table, cols, row, op))  # the writer thread commits them once the lock is gone
                        continue
                    self.dropped += len(left)
                    report_internal("store", exc)
                except Exception as exc:  # noqa: BLE001 - a full disk or bad row must not kill the writer
                    self.dropped += len(rows) - done[0]
                    report_internal("store", exc)
        finally:
            if busy_ms is not None:
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def _exec(self, conn: sqlite3.Connection, table: str, op: str, cols: tuple[str, ...] | None,
              rows: list[Any], done: list[int]) -> None:
        """Commit ``rows``, counting the committed ones in ``done[0]``."""
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        if op == "insert":
            assert cols is not None
            cols, rows = _without_empty_columns(cols, rows)  # same rows, same order: ``done`` still counts them
            # Multi-row statements of a few fixed sizes (128, 64, ..., 1 rows): each is atomic, releases the
            # GIL once, and is prepared once per connection (a statement sized to every batch would be
            # parsed anew each time: that cost more than the inserts themselves).
            i, n = 0, len(rows)
            cap = max(1, min(_CHUNK_ROWS, _MAX_VARIABLES // max(len(cols), 1)))
            while i < n:
                k = min(cap, 1 << ((n - i).bit_length() - 1))
                self._insert_chunk(conn, table, cols, rows[i:i + k])
                i += k
                done[0] = i
            return
        for row in rows:
            row = _encode(row)
            cols_sql = ", ".join(row)
            marks = ", ".join(f":{c}" for c in row)
            if op == "update":
                sets = ", ".join(f"{c} = :{c}" for c in row if c != "run_id" and row[c] is not None)
                if sets:
                    conn.execute(f"UPDATE {table} SET {sets} WHERE run_id = :run_id", row)
            else:  # insert_once
                conn.execute(f"INSERT INTO {table} ({cols_sql}) VALUES ({marks}) ON CONFLICT DO NOTHING", row)
            done[0] += 1


    def _insert_chunk(self, conn: sqlite3.Connection, table: str, cols: tuple[str, ...], chunk: list[Any]) -> None:
        """Insert ``chunk`` in one statement. A row SQLite refuses (a constraint) is dropped and counted on
        its own, the others still land; an ``OperationalError`` (locked, busy, disk) is the caller's."""
        sql = _insert_sql(table, cols, len(chunk))
        try:
            try:
                conn.execute(sql, _params(cols, chunk, strict=False))
            except (sqlite3.ProgrammingError, sqlite3.InterfaceError):  # a value SQLite cannot bind
                conn.execute(sql, _params(cols, chunk, strict=True))
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            if len(chunk) > 1:
                for row in chunk:
                    self._insert_chunk(conn, table, cols, [row])
                return
            self.dropped += 1
            report_internal("store", exc)


_CHUNK_ROWS = 128
_MAX_VARIABLES = 30_000  # SQLite's default limit is 32766 bound parameters per statement
_sql: dict[tuple[str, tuple[str, ...], int], str] = {}


def _without_empty_columns(cols: tuple[str, ...], rows: list[Any]) -> tuple[tuple[str, ...], list[Any]]:
    """``cols`` and ``rows`` without the columns that are None in every row (every column of ``TABLES``
    defaults to NULL, so the rows stored are the same). SQLite binds and stores fewer values: a job row
    leaves a third of its columns empty, and leaving them out cut the writer's time per row from 11 to 6 us
    (150-row batches)."""
    empty = [j for j, v in enumerate(rows[0]) if v is None]
    for row in rows:
        if not empty:
            return cols, rows
        empty = [j for j in empty if row[j] is None]
    drop = set(empty)
    keep = [j for j in range(len(cols)) if j not in drop]
    if not drop or not keep:  # nothing to leave out; or nothing set at all: SQLite refuses it and says why
        return cols, rows
    if len(keep) == 1:  # itemgetter of one index gives the value, not a tuple
        k = keep[0]
        return (cols[k],), [(row[k],) for row in rows]
    get = operator.itemgetter(*keep)
    return tuple(cols[j] for j in keep), [get(row) for row in rows]


def _insert_sql(table: str, cols: tuple[str, ...], rows: int) -> str:
    """The text of a ``rows``-row insert (cached: the same text finds the connection's prepared statement)."""
    key = (table, cols, rows)
    sql = _sql.get(key)
    if sql is None:
        if len(_sql) > 256:
            _sql.clear()
        one = "(" + ", ".join("?" * len(cols)) + ")"
        sql = _sql[key] = f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ", ".join([one] * rows)
    return sql


INLINE_BUSY_MS = 50  # how long an inline drain (on the user's thread) waits for a locked store


def _groups(batch: list[tuple[str, Any, Any, str]]) -> list[tuple[str, str, Any, list[Any]]]:
    """Consecutive inserts into the same table with the same columns, in order (other operations alone)."""
    out: list[tuple[str, str, Any, list[Any]]] = []
    last: tuple[str, Any] | None = None
    for table, cols, row, op in batch:
        if op == "insert" and last is not None and last[0] == table and (last[1] is cols or last[1] == cols):
            out[-1][3].append(row)
            continue
        out.append((table, op, cols, [row]))
        last = (table, cols) if op == "insert" else None
    return out


# --- reading ------------------------------------------------------------------------------------

def _row(r: sqlite3.Row) -> dict[str, Any]:
    d = dict(r)
    for k in _JSON_COLUMNS & d.keys():
        if isinstance(d[k], str):
            try:
                d[k] = json.loads(d[k])
            except ValueError:
                pass
    return d


def list_runs(conn: sqlite3.Connection, limit: int = 20) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT r.*, (SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.run_id) AS jobs, "
        "(SELECT COALESCE(SUM(shots), 0) FROM jobs j WHERE j.run_id = r.run_id) AS shots "
        "FROM runs r ORDER BY started_at DESC, rowid DESC LIMIT ?", (limit,)).fetchall()
    return [_row(r) for r in rows]


def resolve_run(conn: sqlite3.Connection, ref: str) -> dict[str, Any]:
    """A run by id, unique id prefix, or ``latest``. Raises StoreError."""
    if ref == "latest":
        r = conn.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
        if r is None:
            raise StoreError("the store holds no runs yet")
        return _row(r)
    rows = conn.execute("SELECT * FROM runs WHERE substr(run_id, 1, ?) = ? LIMIT 2", (len(ref), ref)).fetchall()
    if not rows:
        raise StoreError(f"no run {ref!r} in the store (see `qobs runs list`)")
    if len(rows) > 1:
        raise StoreError(f"run id prefix {ref!r} is ambiguous; give more characters")
    return _row(rows[0])


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the store at one moment (a run may still be writing)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


# Jobs are aggregated in SQLite, never loaded into Python: a day of simulator jobs is millions of rows.
_BACKEND = "COALESCE(NULLIF(backend, ''), 'unknown')"  # as `backend or "unknown"`


def run_summary(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """Totals per backend, training progress and event counts for one run."""
    from decimal import Decimal

    backends: dict[str, dict[str, Any]] = {}
    n_dur: dict[str, int] = {}
    n_queue: dict[str, int] = {}
    # provider: that of the backend's first job (a bare column beside MIN() takes the row of the minimum)
    for r in conn.execute(
            f"SELECT {_BACKEND} AS k, provider, MIN(id), COUNT(*) AS jobs, COALESCE(SUM(circuits), 0) AS circuits, "
            "COALESCE(SUM(shots), 0) AS shots, SUM(status = 'error') AS errors, "
            "SUM(status = 'cancelled') AS cancelled, SUM(status = 'blocked') AS blocked, "
            "SUM(cost IS NULL) AS unpriced, COUNT(duration_s) AS n_dur, "
            f"COUNT(queue_s) AS n_queue FROM jobs WHERE run_id = ? GROUP BY k ORDER BY MIN(id)", (run_id,)):
        k = r["k"]
        backends[k] = {"provider": r["provider"], "jobs": r["jobs"], "circuits": r["circuits"], "shots": r["shots"],
                       "errors": r["errors"], "cancelled": r["cancelled"], "blocked": r["blocked"], "cost": Decimal(0),
                       "currency": None, "unpriced_jobs": r["unpriced"]}
        n_dur[k], n_queue[k] = r["n_dur"], r["n_queue"]
    for k, cost, n in conn.execute(f"SELECT {_BACKEND}, cost, COUNT(*) FROM jobs WHERE run_id = ? AND cost IS NOT NULL "
                                   "GROUP BY 1, 2", (run_id,)):
        backends[k]["cost"] += Decimal(cost) * n
    # currency: that of the backend's last priced job that names one
    for k, currency, _ in conn.execute(
            f"SELECT {_BACKEND}, cost_currency, MAX(id) FROM jobs WHERE run_id = ? AND cost IS NOT NULL "
            "AND NULLIF(cost_currency, '') IS NOT NULL GROUP BY 1", (run_id,)):
        backends[k]["currency"] = currency
    durations = group_quantiles(conn, "duration_s", _BACKEND, run_id, n_dur, (0.5, 0.95))
    queues = group_quantiles(conn, "queue_s", _BACKEND, run_id, n_queue, (0.95,))
    for k, b in backends.items():
        b["cost"] = str(b["cost"])
        b["job_duration_p50_s"], b["job_duration_p95_s"] = durations[k]
        (b["queue_p95_s"],) = queues[k]
    steps = conn.execute("SELECT COUNT(*) AS n, MAX(step) AS last, COALESCE(SUM(samples), 0) AS samples "
                         "FROM steps WHERE run_id = ?", (run_id,)).fetchone()
    last_step = conn.execute("SELECT metrics FROM steps WHERE run_id = ? ORDER BY id DESC LIMIT 1",
                             (run_id,)).fetchone()
    events = {r["kind"]: r["n"] for r in conn.execute(
        "SELECT kind, COUNT(*) AS n FROM events WHERE run_id = ? GROUP BY kind", (run_id,))}
    totals = {k: sum(b[k] for b in backends.values())
              for k in ("jobs", "circuits", "shots", "errors", "cancelled", "blocked", "unpriced_jobs")}
    return {
        "backends": backends,
        "totals": totals,
        "training": {"steps": steps["n"], "last_step": steps["last"], "samples": steps["samples"],
                     "last_metrics": _row(last_step)["metrics"] if last_step else None},
        "events": events,
    }


def group_quantiles(conn: sqlite3.Connection, column: str, key: str, run_id: str, counts: dict[Any, int],
                    qs: tuple[float, ...]) -> dict[Any, list[float | None]]:
    """``_quantile`` of a job ``column``'s non-null values in each group of a run, for each of ``qs``.

    ``key`` is the SQL of the group key and ``counts`` the non-null values per group (from an aggregate
    query over the same key). SQLite sorts the run's values once; they are streamed and only the ranks
    asked for are kept: a run of millions of jobs is never held in Python.
    """
    ranks = {k: [min(n - 1, max(0, round(q * (n - 1)))) for q in qs] for k, n in counts.items() if n > 0}
    wanted = {k: set(rs) for k, rs in ranks.items()}
    seen: dict[Any, int] = dict.fromkeys(ranks, 0)
    got: dict[tuple[Any, int], float] = {}
    if ranks:
        for k, v in conn.execute(f"SELECT {key}, {column} FROM jobs WHERE run_id = ? AND {column} IS NOT NULL "
                                 f"ORDER BY {column}", (run_id,)):
            i = seen.get(k)
            if i is None:  # a group that appeared after ``counts`` was taken (a live run)
                continue
            seen[k] = i + 1
            if i in wanted[k]:
                got[(k, i)] = v
    return {k: [got.get((k, r)) for r in ranks[k]] if k in ranks else [None] * len(qs) for k in counts}


def prunable_runs(conn: sqlite3.Connection, older_than_s: float | None, keep_last: int | None,
                  now: float) -> list[dict[str, Any]]:
    """Runs to prune: last active (ended, or its last job, step or event) more than ``older_than_s`` ago,
    and not among the ``keep_last`` most recently started. A run still writing is never old."""
    rows_ = conn.execute(
        "SELECT r.run_id, r.started_at, r.ended_at, r.status, MAX(COALESCE(r.ended_at, 0), r.started_at, "
        "COALESCE((SELECT MAX(ts) FROM jobs j WHERE j.run_id = r.run_id), 0), "
        "COALESCE((SELECT MAX(ts) FROM steps s WHERE s.run_id = r.run_id), 0), "
        "COALESCE((SELECT MAX(ts) FROM events e WHERE e.run_id = r.run_id), 0)) AS last_active "
        "FROM runs r ORDER BY r.started_at DESC, r.rowid DESC").fetchall()
    out = [dict(r) for r in rows_[keep_last or 0:]]
    if older_than_s is not None:
        out = [r for r in out if r["last_active"] < now - older_than_s]
    # A run that never ended may still be running (a job in a provider's queue writes nothing for hours):
    # only an age says it is dead, never its rank alone.
    return [r for r in out if r["ended_at"] is not None or older_than_s is not None]


PRUNE_CHUNK = 20_000  # rows per delete transaction: a writer sharing the store never waits long


def prune_runs(conn: sqlite3.Connection, run_ids: list[str], keep_events: set[int]) -> dict[str, int]:
    """Delete runs with their jobs, steps and events (except the event ids in ``keep_events``), in short
    transactions. Returns rows deleted per table."""
    deleted = dict.fromkeys(("runs", "jobs", "steps", "events"), 0)
    keep = ",".join(str(int(i)) for i in keep_events)
    for rid in run_ids:
        for table in ("jobs", "steps", "events"):
            extra = f" AND id NOT IN ({keep})" if table == "events" and keep else ""  # NOT IN (NULL) matches nothing
            while True:
                n = conn.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE run_id = ?{extra} "
                                 f"LIMIT {PRUNE_CHUNK})", (rid,)).rowcount
                deleted[table] += n
                if n < PRUNE_CHUNK:
                    break
        deleted["runs"] += conn.execute("DELETE FROM runs WHERE run_id = ?", (rid,)).rowcount
    return deleted


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def rows(conn: sqlite3.Connection, table: str, run_id: str) -> Iterable[dict[str, Any]]:
    if table not in TABLES:
        raise ValueError(table)
    return [_row(r) for r in conn.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY id", (run_id,))]
