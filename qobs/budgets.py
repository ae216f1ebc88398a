"""Shot and money budgets: declared in a file (``QOBS_BUDGETS``) or with ``qobs.budget(...)``.

A budget limits shots and/or USD over a calendar month (UTC) or a rolling window
(``rolling:7d``), for one backend (glob), one model, or everything. Modes:

- ``warn`` (default): the job goes on; logged once per period and recorded as an event;
- ``block``: a job that would cross the limit raises ``BudgetExceeded`` before anything is sent;
- ``fallback``: the job is rerouted to a simulator (``SubmitDecision``) and the reroute recorded.

Usage per period and the 25/50/75/100 % thresholds already announced live in the run store
(``budget_usage``, ``budget_thresholds``), updated in one ``BEGIN IMMEDIATE`` transaction per job,
so a crossing is announced once even when several processes share the store. Without a store the
state is per process (in memory).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from qobs import _forksafe
from qobs.errors import ConfigError, contained
from qobs.telemetry import SubmissionRefused, SubmitDecision

log = logging.getLogger("qobs")

MODES = ("warn", "block", "fallback")
THRESHOLDS = (25, 50, 75, 100)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PERIOD = re.compile(r"^rolling:(\d+(?:\.\d+)?)([smhdw])$")
_FIELDS = {"name", "shots", "usd", "period", "scope", "mode", "fallback"}


class BudgetExceeded(SubmissionRefused):
    """A ``block`` budget refused a job before submission. Nothing was sent."""

    reason = "budget"

    def __init__(self, message: str, budget: str, left_shots: int | None, left_usd: Decimal | None) -> None:
        super().__init__(message)
        self.budget = budget
        self.left_shots = left_shots
        self.left_usd = left_usd


@dataclass
class Budget:
    name: str
    shots: int | None = None
    usd: Decimal | None = None
    period: str = "month"
    scope: dict[str, str] = field(default_factory=dict)
    mode: str = "warn"
    fallback: Any = None
    origin: str = "qobs.budget()"

    @property
    def window_s(self) -> float | None:
        m = _PERIOD.match(self.period)
        return None if m is None else float(m.group(1)) * _UNITS[m.group(2)]

    def applies(self, backend: str | None, model: str | None) -> bool:
        import fnmatch

        b = self.scope.get("backend")
        if b is not None and not fnmatch.fnmatchcase((backend or "").lower(), b.lower()):
            return False
        m = self.scope.get("model")
        return m is None or m == model

    def period_key(self, now: float) -> str:
        if self.window_s is None:
            return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")
        return "rolling"

    def bucket(self, now: float) -> tuple[str, float]:
        """Where usage at ``now`` is added: the month, or a time bucket (1/168 of the window)."""
        w = self.window_s
        if w is None:
            d = datetime.fromtimestamp(now, UTC)
            return d.strftime("%Y-%m"), datetime(d.year, d.month, 1, tzinfo=UTC).timestamp()
        width = max(w / 168, 1.0)
        start = math.floor(now / width) * width
        return f"r{start:.0f}", start


def _validate(raw: Mapping[str, Any], where: str) -> Budget:
    from qobs.cost import decimal_field

    unknown = set(raw) - _FIELDS
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field (expected {', '.join(sorted(_FIELDS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: expected a non-empty string")
    shots = raw.get("shots")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots <= 0):
        raise ConfigError(f"{where}.shots: expected a positive integer, got {shots!r}")
    usd = raw.get("usd")
    usd_d = None if usd is None else decimal_field(usd, f"{where}.usd")
    if usd_d is not None and usd_d == 0:
        raise ConfigError(f"{where}.usd: expected a positive amount, got {usd!r}")
    if shots is None and usd_d is None:
        raise ConfigError(f"{where}: give shots and/or usd")
    period = raw.get("period", "month")
    m = _PERIOD.match(period) if isinstance(period, str) else None
    if period != "month" and (m is None or float(m.group(1)) <= 0):
        raise ConfigError(f"{where}.period: expected 'month' or 'rolling:<n><s|m|h|d|w>' (e.g. rolling:7d), "
                          f"got {period!r}")
    scope = raw.get("scope", "all")
    if scope in ("all", None, {}):
        scope = {}
    elif not isinstance(scope, Mapping) or len(scope) != 1 or next(iter(scope)) not in ("backend", "model") \
            or not isinstance(next(iter(scope.values())), str):
        raise ConfigError(f"{where}.scope: expected 'all', {{backend: NAME-or-glob}} or {{model: NAME}}, got {scope!r}")
    mode = raw.get("mode", "warn")
    if mode not in MODES:
        raise ConfigError(f"{where}.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    fallback = raw.get("fallback")
    if isinstance(fallback, (bool, int, float, list, dict)) or fallback == "":
        raise ConfigError(f"{where}.fallback: expected a backend name (e.g. aer_simulator), got {fallback!r}")
    if mode == "fallback" and fallback is None:
        raise ConfigError(f"{where}.fallback: mode fallback needs a fallback backend (e.g. aer_simulator)")
    return Budget(name=name.strip(), shots=shots, usd=usd_d, period=period, scope=dict(scope), mode=mode,
                  fallback=fallback, origin=where)


def parse_file(path: str) -> list[Budget]:
    """Read and validate a budgets file (YAML or JSON). Raises ConfigError with one line."""
    from qobs.cost import read_structured

    data = read_structured(path, "budget")
    entries = data.get("budgets") if isinstance(data, Mapping) else data
    if isinstance(data, Mapping) and set(data) - {"budgets"}:
        raise ConfigError(f"{path}: unknown top-level field {sorted(set(data) - {'budgets'})[0]!r} "
                          "(expected budgets)")
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: budgets: expected a list of budgets")
    out: list[Budget] = []
    names: set[str] = set()
    for i, e in enumerate(entries):
        where = f"{path}: budgets[{i}]"
        if not isinstance(e, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(e).__name__}")
        b = _validate(e, where)
        if b.name in names:
            raise ConfigError(f"{where}.name: duplicate budget name {b.name!r}")
        names.add(b.name)
        out.append(b)
    return out


# --- registry -----------------------------------------------------------------------------------

_lock = threading.RLock()
_budgets: dict[str, Budget] = {}
_from_file: set[str] = set()
_warned: set[tuple[str, str]] = set()


def load_file(path: str | None) -> None:
    """(Re)load the budgets of ``QOBS_BUDGETS``; library-declared budgets stay."""
    with _lock:
        for n in _from_file:
            _budgets.pop(n, None)
        _from_file.clear()
    _changed()
    if not path:
        return
    loaded = parse_file(path)
    with _lock:
        for b in loaded:
            _budgets[b.name] = b
            _from_file.add(b.name)
    _changed()
    for b in loaded:
        with contained("budgets"):
            _publish(b, *_used(b, time.time()))


def budget(name: str, *, shots: int | None = None, usd: float | str | Decimal | None = None,
           period: str = "month", scope: Mapping[str, str] | str | None = None, mode: str = "warn",
           fallback: Any = None) -> Budget:
    """Declare (or replace) a budget. Raises ConfigError on a bad argument."""
    from qobs import features

    raw: dict[str, Any] = {"name": name, "shots": shots, "usd": usd, "period": period,
                           "scope": scope if scope is not None else "all", "mode": mode, "fallback": fallback}
    b = _validate({k: v for k, v in raw.items() if v is not None}, f"qobs.budget({name!r})")
    features.ensure_active()
    with _lock:
        _budgets[b.name] = b
        _from_file.discard(b.name)
    _changed()
    with contained("budgets"):
        _publish(b, *_used(b, time.time()))
    return b


def remove(name: str) -> None:
    with _lock:
        _budgets.pop(name, None)
        _from_file.discard(name)
    _changed()


def clear() -> None:
    """Forget every declared budget (tests)."""
    with _lock:
        _budgets.clear()
        _from_file.clear()
        _warned.clear()
    _changed()


def _changed() -> None:
    """Whether jobs must be shown to the budget guard (``features.guard.wanted``) may have changed."""
    from qobs import telemetry

    telemetry.lean_changed()


def declared() -> list[Budget]:
    with _lock:
        return list(_budgets.values())


# --- state in the store -------------------------------------------------------------------------

_conn_lock = threading.Lock()
_forksafe.module_locks(__name__, "_lock", "_conn_lock")
_conn: tuple[int, str, sqlite3.Connection] | None = None


def _connection() -> sqlite3.Connection:
    """A connection to the run store (one per process, reopened after fork), or an in-memory one."""
    global _conn
    from qobs import config, features

    path = config.store_path(features.settings())
    key = str(path) if path is not None else ":memory:"
    c = _conn
    if c is not None and c[0] == os.getpid() and c[1] == key:
        return c[2]
    from qobs.store import connect

    if path is None:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        from qobs.store import _migrate

        _migrate(conn)
    else:
        conn = connect(path)
    _conn = (os.getpid(), key, conn)
    return conn


def reset_connection() -> None:
    global _conn
    with _conn_lock:
        if _conn is not None and _conn[0] == os.getpid():
            try:
                _conn[2].close()
            except sqlite3.Error:
                pass
        _conn = None


def _used_in(conn: sqlite3.Connection, b: Budget, now: float) -> tuple[int, Decimal]:
    w = b.window_s
    if w is None:
        rows = conn.execute("SELECT shots, usd FROM budget_usage WHERE budget = ? AND bucket = ?",
                            (b.name, b.bucket(now)[0])).fetchall()
    else:
        width = max(w / 168, 1.0)
        rows = conn.execute("SELECT shots, usd FROM budget_usage WHERE budget = ? AND start + ? > ?",
                            (b.name, width, now - w)).fetchall()
    return sum(int(r[0]) for r in rows), sum((Decimal(r[1]) for r in rows), Decimal(0))


def _used(b: Budget, now: float) -> tuple[int, Decimal]:
    with _conn_lock:
        return _used_in(_connection(), b, now)


def _add(b: Budget, shots: int, usd: Decimal, now: float) -> tuple[int, Decimal, list[tuple[str, int]]]:
    """Add a job's usage and claim the thresholds it crosses, atomically across processes."""
    bucket, start = b.bucket(now)
    period = b.period_key(now)
    with _conn_lock:
        conn = _connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT usd FROM budget_usage WHERE budget = ? AND bucket = ?",
                               (b.name, bucket)).fetchone()
            if row is None:
                conn.execute("INSERT INTO budget_usage (budget, bucket, start, shots, usd) VALUES (?, ?, ?, ?, ?)",
                             (b.name, bucket, start, shots, str(usd)))
            else:
                conn.execute("UPDATE budget_usage SET shots = shots + ?, usd = ? WHERE budget = ? AND bucket = ?",
                             (shots, str(Decimal(row[0]) + usd), b.name, bucket))
            used_shots, used_usd = _used_in(conn, b, now)
            crossed: list[tuple[str, int]] = []
            for kind, used, limit in (("shots", Decimal(used_shots), b.shots), ("usd", used_usd, b.usd)):
                if limit is None:
                    continue
                pct = used * 100 / Decimal(limit)
                if b.window_s is not None:  # a rolling window re-arms thresholds it has fallen below
                    conn.execute("DELETE FROM budget_thresholds WHERE budget = ? AND period = ? AND kind = ? "
                                 "AND pct > ?", (b.name, period, kind, float(pct)))
                for t in THRESHOLDS:
                    if pct >= t:
                        cur = conn.execute(
                            "INSERT INTO budget_thresholds (budget, period, kind, pct, ts, pid) "
                            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            (b.name, period, kind, t, now, os.getpid()))
                        if cur.rowcount == 1:
                            crossed.append((kind, t))
            if b.window_s is not None:
                conn.execute("DELETE FROM budget_usage WHERE budget = ? AND start < ?", (b.name, now - 2 * b.window_s))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return used_shots, used_usd, crossed


def _publish(b: Budget, used_shots: int, used_usd: Decimal) -> None:
    from qobs.metrics import instruments

    m = instruments()
    if b.shots is not None:
        m["qobs_shot_budget_limit_shots"].child(b.name).set(b.shots)
        m["qobs_shot_budget_used_shots"].child(b.name).set(used_shots)
    if b.usd is not None:
        m["qobs_money_budget_limit_usd"].child(b.name).set(float(b.usd))
        m["qobs_money_budget_used_usd"].child(b.name).set(float(used_usd))


# --- hooks --------------------------------------------------------------------------------------

def _job_shots(record: Any) -> int:
    if record.shots is not None:
        return record.shots
    return (record.shots_requested or 0) * max(record.circuits or 0, 1)


def on_job(record: Any) -> None:
    """Job listener: count the job against every budget in scope; announce crossings once."""
    if not _budgets or record.submission_reason is not None:
        return
    from qobs.telemetry import record_event

    shots = _job_shots(record) if record.status == "ok" else 0
    usd = record.cost if record.cost is not None else Decimal(0)
    now = time.time()
    for b in declared():
        if not b.applies(record.backend, record.model):
            continue
        used_shots, used_usd, crossed = _add(b, shots, usd, now)
        _publish(b, used_shots, used_usd)
        for kind, pct in crossed:
            limit = b.shots if kind == "shots" else b.usd
            used = used_shots if kind == "shots" else used_usd
            record_event("budget_threshold", b.name, {
                "kind": kind, "percent": pct, "used": str(used), "limit": str(limit), "period": b.period_key(now),
                "mode": b.mode, "backend": record.backend, "pid": os.getpid()})
            if pct == 100:
                log.warning("qobs: budget %r used %s of %s %s this period", b.name, used, limit, kind)


def _describe_left(b: Budget, used_shots: int, used_usd: Decimal) -> str:
    parts = []
    if b.shots is not None:
        parts.append(f"{max(b.shots - used_shots, 0)} of {b.shots} shots left")
    if b.usd is not None:
        parts.append(f"{max(b.usd - used_usd, Decimal(0))} of {b.usd} USD left")
    return ", ".join(parts)


def guard(request: Any) -> SubmitDecision | None:
    """Submit guard: refuse, reroute or warn about a job that would cross a budget."""
    if not _budgets:
        return None
    from qobs import cost
    from qobs.telemetry import drain, record_event

    drain()  # jobs finished but not yet recorded count before this one is let through

    shots = request.shots  # total over the job's circuits (as adapters fill SubmitRequest)
    per_circuit = shots // max(request.circuits or 0, 1)
    est: Decimal | None = None
    now = time.time()
    decision: SubmitDecision | None = None
    for b in declared():
        if not b.applies(request.backend, request.model):
            continue
        used_shots, used_usd = _used(b, now)
        over = []
        if b.shots is not None and used_shots + shots > b.shots:
            over.append(f"{shots} shots")
        if b.usd is not None:
            if est is None:
                e = cost.estimate(request.circuits or 1, per_circuit, request.backend_obj or request.backend,
                                  request.provider)
                est = e.amount if e.amount is not None else Decimal(0)
            if used_usd + est > b.usd:
                over.append(f"an estimated {est} USD")
        if not over:
            continue
        what = (f"{request.operation} job of {request.circuits} circuit(s) x {per_circuit} shots on "
                f"{request.backend} ({' and '.join(over)})")
        left = _describe_left(b, used_shots, used_usd)
        period = b.period_key(now)
        if b.mode == "block":
            record_event("budget_refused", b.name, {"request": what, "left": left, "period": period})
            raise BudgetExceeded(f"budget {b.name!r} ({b.period}) refuses the {what}: {left}; nothing was sent",
                                 b.name, None if b.shots is None else max(b.shots - used_shots, 0),
                                 None if b.usd is None else max(b.usd - used_usd, Decimal(0)))
        if b.mode == "fallback":
            target = resolve_fallback(b)
            name = b.fallback if isinstance(b.fallback, str) else cost.backend_name(target)
            record_event("budget_fallback", b.name, {"request": what, "left": left, "fallback": name,
                                                     "period": period})
            if decision is None:
                decision = SubmitDecision(fallback=target, fallback_name=name,
                                          reason=f"budget {b.name!r} exhausted: {left}")
            continue
        key = (b.name, period)
        if key not in _warned:
            _warned.add(key)
            log.warning("qobs: budget %r (%s) exceeded by the %s: %s", b.name, b.period, what, left)
            record_event("budget_exceeded", b.name, {"request": what, "left": left, "mode": "warn",
                                                     "period": period})
    return decision


_fallbacks: dict[str, Any] = {}


def resolve_fallback(b: Budget) -> Any:
    """The fallback backend object (names are resolved once: ``aer_simulator``, ``sim_*``, ``fake_*``, ...)."""
    if not isinstance(b.fallback, str):
        return b.fallback
    obj = _fallbacks.get(b.fallback)
    if obj is None:
        from qobs.fidelity import resolve_backend

        obj = _fallbacks[b.fallback] = resolve_backend(b.fallback)
    return obj
