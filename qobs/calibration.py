"""Calibration snapshots of a Qiskit backend at run time, and change events.

From a BackendV2 ``target``: mean readout error (the ``measure`` instruction), mean two-qubit gate
error, mean T1/T2 (``target.qubit_properties``) and the calibration's last update time (the
simulated QPU's ``calibration_time``, else ``backend.properties().last_update_date``). Gauges
``qobs_backend_*`` and ``qobs_calibration_age_seconds``; a snapshot that differs from the previous
one of the same backend is stored as a ``calibration_change`` event. Snapshots are cached per
backend object, target and update time, so the per-job cost is a dict lookup and a few gauge sets.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any

from qobs import _forksafe
from qobs._context import CTX_BACKEND, CTX_CALIBRATION

_REFRESH_S = 60.0  # re-read properties() of backends without a cheap update stamp at most this often


@dataclass(frozen=True)
class Snapshot:
    backend: str
    readout_error: float | None
    two_qubit_error: float | None
    t1_s: float | None
    t2_s: float | None
    last_update: float | None  # epoch seconds of the calibration in effect
    taken_at: float

    def age(self, now: float | None = None) -> float | None:
        if self.last_update is None:
            return None
        return max((now or time.time()) - self.last_update, 0.0)

    def values(self) -> tuple[float | None, ...]:
        return (self.readout_error, self.two_qubit_error, self.t1_s, self.t2_s, self.last_update)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def last_update(backend: Any) -> float | None:
    """Epoch seconds of the backend's calibration, when it says."""
    t = getattr(backend, "calibration_time", None)
    if isinstance(t, (int, float)):
        return float(t)
    props = getattr(backend, "properties", None)
    if callable(props):
        try:
            p = props()
        except Exception:  # noqa: BLE001 - simulators raise or return None
            return None
        d = getattr(p, "last_update_date", None)
        if d is not None and hasattr(d, "timestamp"):
            return d.timestamp()
    return None


def snapshot(backend: Any) -> Snapshot | None:
    """Read a snapshot from ``backend.target`` (None when the backend has no calibration data)."""
    target = getattr(backend, "target", None)
    if target is None:
        return None
    readout: list[float] = []
    twoq: list[float] = []
    for name in target.operation_names:
        try:
            props = target[name]
        except KeyError:
            continue
        if not props:
            continue
        for qargs, p in props.items():
            if p is None or qargs is None or getattr(p, "error", None) is None:
                continue
            if name == "measure" and len(qargs) == 1:
                readout.append(p.error)
            elif len(qargs) == 2:
                twoq.append(p.error)
    t1: list[float] = []
    t2: list[float] = []
    for qp in getattr(target, "qubit_properties", None) or ():
        if qp is None:
            continue
        if getattr(qp, "t1", None) is not None:
            t1.append(qp.t1)
        if getattr(qp, "t2", None) is not None:
            t2.append(qp.t2)
    if not (readout or twoq or t1 or t2):
        return None
    from qobs.cost import backend_name

    return Snapshot(backend_name(backend), _mean(readout), _mean(twoq), _mean(t1), _mean(t2), last_update(backend),
                    time.time())


_lock = threading.Lock()
_forksafe.module_locks(__name__, "_lock")
_cache: dict[int, tuple[Any, Any, float | None, float, Snapshot | None]] = {}
_last: dict[str, Snapshot] = {}
_seen_at: dict[str, float] = {}  # backend name -> the latest time a snapshot was observed as of


def reset() -> None:
    with _lock:
        _cache.clear()
        _last.clear()
        _seen_at.clear()


def current(backend: Any) -> Snapshot | None:
    """The snapshot of ``backend`` now (cached per backend object while its update stamp holds;
    backends without a cheap stamp are re-read at most every minute)."""
    now = time.time()
    stamp = getattr(backend, "calibration_time", None)
    c = _cache.get(id(backend))
    if c is not None and c[0]() is backend:
        if stamp is not None and c[2] == stamp:
            return c[4]
        if stamp is None and now - c[3] < _REFRESH_S:
            return c[4]
    snap = snapshot(backend)
    with _lock:
        if len(_cache) > 256:
            _cache.clear()
        try:
            ref = weakref.ref(backend)  # the cache must not keep a backend the user let go
        except TypeError:
            return snap
        _cache[id(backend)] = (ref, None, stamp, now, snap)
    return snap


def observe(backend: Any, name: str | None = None, at: float | None = None,
            snap: Snapshot | bool | None = False) -> Snapshot | None:
    """Snapshot ``backend`` (or take ``snap``, read earlier), publish the gauges and record a change
    event. Returns the snapshot. ``at`` (epoch seconds, default now) is when the age is taken."""
    if snap is False:
        snap = current(backend)
    if snap is None:
        return None
    from qobs.metrics import instruments
    from qobs.telemetry import record_event

    b = name or snap.backend
    when = time.time() if at is None else at
    with _lock:
        if when < _seen_at.get(b, when):
            # a job that ended before one already observed, recorded after it (another thread recorded it, a
            # poller settled it): its calibration is older news, for the gauges and for change events alike
            return snap
        _seen_at[b] = when
    m = instruments()
    age = snap.age(at)
    if age is not None:
        m["qobs_calibration_age_seconds"].child(b).set(age)
    for metric, v in (("qobs_backend_readout_error", snap.readout_error),
                      ("qobs_backend_two_qubit_error", snap.two_qubit_error),
                      ("qobs_backend_t1_seconds", snap.t1_s), ("qobs_backend_t2_seconds", snap.t2_s)):
        if v is not None:
            m[metric].child(b).set(v)
    with _lock:
        prev = _last.get(b)
        changed = prev is None or prev.values() != snap.values()
        if changed:
            _last[b] = snap
    if changed:
        data = {k: v for k, v in asdict(snap).items() if k not in ("backend", "taken_at")}
        if prev is None:
            record_event("calibration_snapshot", b, data)
        else:
            data["previous"] = {k: v for k, v in asdict(prev).items() if k not in ("backend", "taken_at")}
            record_event("calibration_change", b, data)
    return snap


def on_job(record: Any) -> None:
    """Job listener: snapshot the backend the job ran on, as of the job's end (run time)."""
    backend = record.context.get(CTX_BACKEND)
    if backend is not None:  # the calibration and its age when the job ended (it may be recorded later)
        observe(backend, record.backend, record.started_at + (record.duration_s or 0.0),
                record.context.get(CTX_CALIBRATION, False))


def at_end(record: Any) -> None:
    """End hook: the calibration in effect as the job ends (the listener publishes it later)."""
    backend = record.context.get(CTX_BACKEND)
    if backend is not None:
        record.context[CTX_CALIBRATION] = current(backend)
