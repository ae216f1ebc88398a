"""The one path every observation takes: adapters describe a job, qobs records it everywhere.

An adapter calls ``start_job`` when a job is submitted (this opens its span, parented on the
caller's active span) and ``finish_job`` when the outcome is known, possibly much later and on
another thread. ``finish_job`` runs the job listeners (cost, budgets, fidelity plug in there),
then updates the contract metrics, ends the span with the contract attributes and queues the
store row. Every step is contained: a failure here is counted, never raised to the user.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from qobs import _forksafe, runtime
from qobs import metrics as _metrics
from qobs._context import (  # noqa: F401 - re-exported: adapters and listeners use them from here
    CTX_BACKEND,
    CTX_CALIBRATION,
    CTX_CIRCUITS,
    CTX_COUNTS,
    CTX_METRICS,
    CTX_RESULT,
    CURRENT_MODEL,
)
from qobs.contract import Attr, Span
from qobs.errors import contained, report_internal


@dataclass(slots=True)
class CircuitStats:
    """Shape of one executed circuit (after transpilation when the adapter knows it)."""

    width: int
    depth: int
    two_qubit_gates: int
    depth_before: int | None = None


@dataclass(slots=True)
class JobRecord:
    """Everything known about one job. Unknown stays None: never recorded as zero."""

    operation: str
    backend: str
    provider: str
    purpose: str = "forward"
    status: str = "ok"
    error_type: str | None = None
    submission_reason: str | None = None
    circuits: int = 0
    bindings: int | None = None
    shots: int | None = None
    shots_requested: int | None = None
    precision: float | None = None
    stats: list[CircuitStats] = field(default_factory=list)
    trainable_params: int | None = None
    transpile_s: float | None = None
    # False when the adapter's transpile hook observed the histogram already (the job only carries its share).
    transpile_observed_here: bool = True
    queue_s: float | None = None
    execution_s: float | None = None
    duration_s: float | None = None
    started_at: float = field(default_factory=time.time)
    job_id: str | None = None
    session_id: str | None = None
    simulator: bool | None = None
    cost: Decimal | None = None
    cost_currency: str = "USD"
    cost_source: str | None = None
    priced: bool = True
    model: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # Objects listeners may use (the result, the backend); never stored.
    context: dict[str, Any] = field(default_factory=dict)


JobListener = Callable[[JobRecord], None]
_listeners: list[JobListener] = []



@dataclass(slots=True)
class SubmitRequest:
    """A job about to be submitted, shown to submit guards (budgets) before anything is sent.

    ``shots`` is the job's total over all its circuits (per-circuit shots x circuits).
    """

    operation: str
    backend: str
    provider: str
    shots: int
    circuits: int
    purpose: str = "forward"
    model: str | None = None
    backend_obj: Any = None
    circuit_objs: Any = None


@dataclass(slots=True)
class SubmitDecision:
    """What a guard decided: go on, or reroute to ``fallback`` (a backend/device object)."""

    fallback: Any = None
    fallback_name: str | None = None
    reason: str | None = None


SubmitGuard = Callable[[SubmitRequest], SubmitDecision | None]
_guards: list[SubmitGuard] = []


class SubmissionRefused(Exception):
    """Raised to the user when a guard refuses a job (a ``block`` budget). Nothing was sent."""

    reason = "budget"


def add_submit_guard(fn: SubmitGuard) -> None:
    """Ask ``fn`` about every job before submission. A guard whose ``wanted()`` answer changes calls
    ``lean_changed()`` when it does."""
    if fn not in _guards:
        _guards.append(fn)
    lean_changed()


def remove_submit_guard(fn: SubmitGuard) -> None:
    if fn in _guards:
        _guards.remove(fn)
    lean_changed()


lean_epoch = 0  # bumped by ``lean_changed``: adapters that remember ``lean_possible()`` compare it


def lean_changed() -> None:
    """Say that ``lean_possible()`` or ``results_kept()`` may answer differently now (a guard, a result wanter, a
    budget, the runtime changed): adapters that remember the answer for a repeated job (it is asked per job)
    ask again. The tracer provider, which the user may set at any time, is not covered: compare it directly."""
    global lean_epoch
    lean_epoch += 1


def check_submit(request: SubmitRequest) -> SubmitDecision | None:
    """Ask the guards about a job before submission.

    Returns None (go on) or a decision with a fallback. Raises ``SubmissionRefused`` when a guard
    blocks the job: adapters record it (status blocked, reason budget) and let it propagate. A
    guard that fails for any other reason is contained: the job goes on.
    """
    if request.model is None:
        request.model = CURRENT_MODEL.get()
    decision = None
    for fn in tuple(_guards):
        try:
            d = fn(request)
        except SubmissionRefused:
            raise
        except Exception as exc:  # noqa: BLE001
            report_internal("submit_guard", exc)
            continue
        if d is not None and d.fallback is not None:
            decision = d
    return decision


def add_job_listener(fn: JobListener) -> None:
    """Run ``fn(record)`` for every finished job, before it is recorded (cost, budgets, fidelity)."""
    global _listeners
    if fn not in _listeners:
        _listeners = [*_listeners, fn]  # copy-on-write: the hot path iterates without a lock


def remove_job_listener(fn: JobListener) -> None:
    global _listeners
    _listeners = [f for f in _listeners if f is not fn]


class JobHandle:
    """An open job: its record, its span, the monotonic clock at submission and, once known, at its
    end (``t_end``: a job recorded later still gets the right duration and span end time)."""

    __slots__ = ("finished", "record", "span", "t0", "t_end")

    def __init__(self, record: JobRecord, span: Any, t0: float) -> None:
        self.record = record
        self.span = span
        self.t0 = t0
        self.t_end: float | None = None
        self.finished = False


def _tracer() -> Any:
    rt = runtime.current() or runtime.start()
    if rt is not None and rt.tracing is not None:
        return rt.tracing.tracer
    return None


_otel_trace: Any = None
_env_provider = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


TRACED: Any = object()  # ``untraced_slot()`` when a span could record


def untraced_slot() -> Any:
    """The API's tracer provider slot, read once, when it allows no span (``tracing_possible`` False with it);
    else ``TRACED``. An adapter that remembers a job's lane compares the slot by identity later."""
    provider = _provider_slot()
    return TRACED if _traced(provider) else provider


def tracing_possible() -> bool:
    """False when no tracer provider is set (spans could not record): the job path then skips spans.

    Reads the API's provider slot directly (``get_tracer_provider`` looks the environment up on every
    call while none is set); an API without that slot is answered with True (the span path decides).
    """
    return _traced(_provider_slot())


def _provider_slot() -> Any:
    if _otel_trace is None:
        _import_trace()
    return getattr(_otel_trace, "_TRACER_PROVIDER", _otel_trace)


def _import_trace() -> None:
    global _otel_trace
    from opentelemetry import trace

    _otel_trace = trace


def _traced(provider: Any) -> bool:
    if provider is None:
        return _env_provider  # the API would load the provider the environment names
    return provider is _otel_trace or not isinstance(provider, _otel_trace.NoOpTracerProvider)


_exit_provider: list[Any] = [None]  # the tracer provider ``runtime.before_provider_shutdown`` was last called for
_exit_provider_lock = threading.Lock()
_forksafe.module_locks(__name__, "_exit_provider_lock")


def _exit_after_provider() -> None:
    """A tracer provider not seen before: record the last jobs at exit before it shuts down."""
    provider = getattr(_otel_trace, "_TRACER_PROVIDER", None)
    if provider is _exit_provider[0]:
        return
    with _exit_provider_lock:
        if provider is _exit_provider[0]:
            return
        _exit_provider[0] = provider
    from qobs import tracing

    if provider is not None and provider is not tracing._ours.get("tracer_provider"):  # ours has no atexit
        runtime.before_provider_shutdown()


def guards_wanted() -> bool:
    """Whether any submit guard wants to see jobs (a guard may say no through a ``wanted()`` attribute,
    so adapters need not describe a job to guards that would let it through unseen)."""
    for g in _guards:
        wanted = getattr(g, "wanted", None)
        if wanted is None or wanted():
            return True
    return False


def start_job(operation: str, backend: str, provider: str, *, parent: Any | None = None,
              **fields: Any) -> JobHandle:
    """Open a job at submission time. ``parent`` is an OTel context (default: the active one)."""
    t0 = time.perf_counter()
    record = JobRecord(operation=operation, backend=backend, provider=provider, **fields)
    if record.model is None:
        record.model = CURRENT_MODEL.get()  # submitted inside a training step: that model's job
    span = None
    try:
        tracer = _tracer()
        if tracer is not None and tracing_possible():
            _exit_after_provider()
            span = tracer.start_span(Span.job(operation, backend), context=parent if parent is not None
                                     else default_parent(),
                                     attributes={Attr.OPERATION: operation, Attr.BACKEND: backend,
                                                 Attr.PROVIDER: provider})
            if not span.is_recording():  # no provider, or sampled out: nothing to fill in later
                span = None
    except Exception as exc:  # noqa: BLE001
        report_internal("tracing", exc)
    return JobHandle(record, span, t0)


def finish_job(handle: JobHandle) -> None:
    """Record a finished job everywhere, once. Safe to call from any thread."""
    if handle.finished:
        return
    handle.finished = True
    rec = handle.record
    if rec.duration_s is None:
        rec.duration_s = (handle.t_end if handle.t_end is not None else time.perf_counter()) - handle.t0
    # Plain try/except rather than ``contained()``: this is the hot path, once per job.
    for fn in _listeners:
        try:
            fn(rec)
        except Exception as exc:  # noqa: BLE001
            report_internal(f"listener:{getattr(fn, '__qualname__', fn)}", exc)
    try:
        _record_metrics(rec)
    except Exception as exc:  # noqa: BLE001
        report_internal("metrics", exc)
    rt = runtime.current()
    if rt is not None and (rt.settings.record_parameters or rt.settings.record_results):
        try:
            _record_opt_in(rec, rt.settings)
        except Exception as exc:  # noqa: BLE001
            report_internal("record_opt_in", exc)
    if handle.span is not None:
        try:
            _end_span(handle)
        except Exception as exc:  # noqa: BLE001
            report_internal("tracing", exc)
    try:
        _store_job(handle)
    except Exception as exc:  # noqa: BLE001
        report_internal("store", exc)


class _Recorder:
    """Finishes jobs off the user's thread: adapters hand a job over when its outcome is known
    (``finish_job_later``), and a background thread records the jobs in batches every ``INTERVAL_S``.

    The user's thread only appends to a deque. Whatever reads what recording produces drains the
    queue first, on its own thread: a Prometheus collection or push, ``qobs.flush()``, the end of
    the run, a budget guard (so that a ``block`` budget sees every finished job), the cost of a
    training step and the fidelity probe. A queue that the thread does not get to (a user thread
    holding the GIL) is drained inline by the next hand-over after ``_late_after`` (about a second),
    so nothing waits long or piles up.
    After ``IDLE_AFTER`` empty rounds the thread sleeps until a job is handed over (an idle program,
    a notebook between cells, costs no wake-ups).
    """

    # Every reader that needs the latest jobs drains first, so the interval trades only the thread's own cost
    # (per round and per job: measured 19 against 12 us of recorder CPU a job at 0.05 and 0.25 s, Aer loop)
    # against how long a killed process's last jobs wait, unrecorded: this plus the store's flush interval
    # (0.5 s), and for a Qiskit job whose result() is not called, its finisher's grace (0.5 to 1 s) first.
    INTERVAL_S = 0.25
    MAX_PENDING = 2048
    IDLE_AFTER = 4  # empty rounds (one second) before the thread sleeps until the next hand-over

    def __init__(self) -> None:
        # (context, handle, prepare, whether prepare may block on the network)
        self._q: deque[tuple[Any, JobHandle | None, Callable[..., Any] | None, bool]] = deque()
        self._lock = threading.RLock()  # one drainer at a time; a listener may drain again (reentrant)
        self._busy = False  # a drainer holds jobs taken off the queue and not yet recorded
        self._wake = threading.Event()
        self._sleeping = False  # the thread waits for a hand-over to wake it
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._last = time.monotonic()
        self._late_after = 4 * self.INTERVAL_S + 0.05

    def submit(self, ctx: Any, handle: JobHandle | None, prepare: Callable[..., Any] | None,
               may_block: bool = False) -> None:
        q = self._q
        q.append((ctx, handle, prepare, may_block))
        if self._thread is None:  # a forked child gets None from ``after_fork``: no getpid() per job
            self._start()
        elif self._sleeping:  # the first job after a pause: wake the thread (it records within INTERVAL_S)
            self._last = time.monotonic()  # before the flag falls: a hand-over that sees it down sees this too
            self._sleeping = False
            self._wake.set()
        elif (len(q) >= self.MAX_PENDING or time.monotonic() - self._last > self._late_after) and \
                self._lock.acquire(False):  # the thread is starved (or the queue is long): record here,
            try:                              # unless someone is recording already (never wait for them)
                self.drain()
            finally:
                self._lock.release()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="qobs-recorder", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        empty = 0
        while True:
            if empty >= self.IDLE_AFTER:
                self._sleeping = True
                if not self._q:  # a job handed over before the flag was up finds the thread awake
                    self._wake.wait()
                self._sleeping = False
                empty = 0
            else:
                self._wake.wait(self.INTERVAL_S)
            self._wake.clear()
            empty = 0 if self._q or self._busy else empty + 1
            self.drain()

    def drain(self, wait: float | None = None) -> bool:
        """Record every job handed over so far (on the calling thread). With ``wait`` (a scrape), give up
        (False) when another drainer holds the recorder longer than that, and stop before a job whose
        reading may block on the network (an IBM job's ``metrics()``): the recorder's thread reads it."""
        q = self._q
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            return False
        try:
            busy, self._busy = self._busy, True
            batch = _batch_begin()  # the batch's metrics are applied once, at its end
            try:
                while q:
                    if wait is not None and q[0][3]:
                        return False
                    ctx, handle, prepare, _ = q.popleft()
                    _finish_now(ctx, handle, prepare)
                    self._last = time.monotonic()
            finally:
                if batch:
                    _batch_end()
                self._busy = busy
            self._last = time.monotonic()
        finally:
            self._lock.release()
        return True

    def after_fork(self) -> None:
        """A forked child records its own jobs only; the parent's queue and thread stay the parent's."""
        self._q = deque()
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._sleeping = False
        self._busy = False
        self._thread = None
        self._last = time.monotonic()


def _finish_now(ctx: Any, handle: JobHandle | None, prepare: Callable[..., Any] | None) -> None:
    try:
        if handle is None:  # ``record_later``: the record is made here, and the end hooks run here
            handle = prepare() if prepare is not None else None
            if handle is None:
                return
            _run_end_hooks(handle.record)
        elif prepare is not None:
            try:
                prepare(handle)
            except Exception as exc:  # noqa: BLE001
                report_internal("adapter", exc)
        if ctx is None:
            finish_job(handle)
        else:
            ctx.run(finish_job, handle)
    except Exception as exc:  # noqa: BLE001 - a failure here must not stop the recorder
        report_internal("recorder", exc)


_recorder = _Recorder()
_FORK_WAIT_S = 2.0  # a fork waits at most this long for a recorder batch in progress


def _before_fork() -> None:
    """Fork between recorder batches: a batch holds metric locks (prometheus_client's among them) that a
    child would inherit locked, and its first recorded job would then wait on them for ever."""
    _recorder._fork_held = _recorder._lock.acquire(timeout=_FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    if getattr(_recorder, "_fork_held", False):
        _recorder._fork_held = False
        _recorder._lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=lambda: _recorder.after_fork())


def finish_job_later(handle: JobHandle, prepare: Callable[[JobHandle], None] | None = None,
                     ctx: Any | None = None, *, may_block: bool = False) -> None:
    """Record a finished job off the caller's thread: ``prepare(handle)`` (reading the SDK's result into
    the record), then ``finish_job``, in ``ctx`` (a ``contextvars.Context``, for listeners that read
    context variables) or an empty context. ``handle.t_end`` should be set by the caller."""
    if handle.finished:
        return
    if handle.t_end is None:
        handle.t_end = time.perf_counter()
    _run_end_hooks(handle.record)  # what must be read as the job ends, not when it is recorded
    _recorder.submit(ctx, handle, prepare, may_block)


def record_later(make: Callable[[], JobHandle | None], ctx: Any | None = None) -> None:
    """Record a finished job whose record ``make()`` builds on the recorder's thread, in ``ctx``'s listeners'
    context; the end hooks run there too. The lean lane of adapters: for jobs whose end-of-job facts cannot
    change between the job's end and its recording (``lean_possible``), the user's thread only queues them."""
    _recorder.submit(ctx, None, make)


def lean_possible() -> bool:
    """Whether a job of an ideal (noiseless) simulator may take an adapter's lean lane now: no submit guard
    wants to see it, no span can record it, nothing will read its result (no opt-in recording, and only
    result wanters marked ``skips_noiseless``). Budgets and settings may change: an adapter asks per job, or
    remembers the answer while ``lean_epoch`` and the tracer provider (``untraced_slot``) stay the same."""
    if _guards and guards_wanted():
        return False
    rt = runtime._rt  # runtime.current(), inline: this runs for every job
    if rt is None or _kept(rt):
        return False
    return not tracing_possible()


def results_kept() -> bool:
    """Whether a job of an ideal simulator must keep its result for recording: opt-in recording is on, or a
    result wanter not marked ``skips_noiseless`` is registered (the lean lane asks again at ``result()``)."""
    return _kept(runtime.current())


def _kept(rt: Any) -> bool:
    for fn in _result_wanters:
        if not getattr(fn, "skips_noiseless", False):
            return True
    return rt is not None and (rt.settings.record_parameters or rt.settings.record_results)


def _run_end_hooks(record: JobRecord) -> None:
    for hook in _end_hooks:
        try:
            hook(record)
        except Exception as exc:  # noqa: BLE001
            report_internal("end_hook", exc)


def hand_over(handle: JobHandle, read: Callable[[JobHandle, bool], None], ctx: Any | None = None, *,
              may_block: bool = False) -> None:
    """Hand a finished job over to be recorded. ``read(handle, keep)`` fills the record from the SDK's
    objects, and with ``keep`` also the context keys listeners read (``CTX_RESULT``, ...).

    When nothing will read those objects (``results_wanted``) and reading cannot block, ``read`` runs
    here and the SDK's objects are let go at once: held until the recorder's next batch, they would
    age into the cyclic GC's older generations, whose collections walk the SDK's whole heap. Otherwise
    it runs on the recorder's thread."""
    if not may_block and not results_wanted(handle.record):
        try:
            read(handle, False)
        except Exception as exc:  # noqa: BLE001
            report_internal("adapter", exc)
        finish_job_later(handle, None, ctx)
        return
    finish_job_later(handle, lambda h: read(h, True), ctx, may_block=may_block)


_end_hooks: list[JobListener] = []


def add_end_hook(fn: JobListener) -> None:
    """Run ``fn(record)`` when a job is handed over to be recorded, on the handing thread (keep it cheap):
    for facts of the moment the job ended, such as the backend's calibration then."""
    global _end_hooks
    if fn not in _end_hooks:
        _end_hooks = [*_end_hooks, fn]


def remove_end_hook(fn: JobListener) -> None:
    global _end_hooks
    _end_hooks = [f for f in _end_hooks if f is not fn]


_result_wanters: list[JobListener] = []


def add_result_wanter(fn: Callable[[JobRecord], bool]) -> None:
    """``fn(record)`` says, as a job is handed over, whether its listener will read the job's SDK objects
    (``CTX_RESULT``, ``CTX_COUNTS``, ``CTX_CIRCUITS``) when it is recorded (the fidelity probe does)."""
    global _result_wanters
    if fn not in _result_wanters:
        _result_wanters = [*_result_wanters, fn]
    lean_changed()


def remove_result_wanter(fn: Callable[[JobRecord], bool]) -> None:
    global _result_wanters
    _result_wanters = [f for f in _result_wanters if f is not fn]
    lean_changed()


def results_wanted(record: JobRecord) -> bool:
    """Whether anything will read this job's result, counts or circuits when it is recorded.

    When nothing will, adapters read the few figures they need as the job is handed over and let the
    SDK's objects go at once: a queue of results waiting to be recorded keeps thousands of objects
    alive, and the collections of the cyclic GC they trigger cost more than reading them does.
    """
    rt = runtime.current()
    if rt is not None and (rt.settings.record_parameters or rt.settings.record_results):
        return True
    for fn in _result_wanters:
        try:
            if fn(record):
                return True
        except Exception as exc:  # noqa: BLE001
            report_internal("result_wanter", exc)
            return True
    return False


_settlers: list[Callable[[], None]] = []


def add_settler(fn: Callable[[], None]) -> None:
    """Have ``drain`` call ``fn()`` first: an adapter's hand-over of jobs that have ended but that it leaves
    unrecorded for a while (a Qiskit job whose ``result()`` may still come), so that every reader of what
    recording produces (a flush, a scrape, a budget guard, the end of the run) sees every ended job."""
    global _settlers
    if fn not in _settlers:
        _settlers = [*_settlers, fn]


def drain(wait: float | None = None) -> bool:
    """Record every job that has ended so far (``add_settler``) and every job handed to ``finish_job_later``,
    now, on this thread. With ``wait``: False when it gave up (another thread recorded longer than that) or
    left a job whose reading may block."""
    for fn in _settlers:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001
            report_internal("settle", exc)
    if _recorder._q or _recorder._busy:  # busy: a job taken off the queue is being recorded; wait for it
        return _recorder.drain(wait)
    return True


SCRAPE_DRAIN_WAIT_S = 1.0  # a scrape waits at most this long for jobs being recorded, then serves what is there


class _DrainOnCollect:
    """Registered first in the default Prometheus registry: a collection (scrape, push, a read in a
    test) records the jobs handed over so far before any series is read."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        try:
            drain(SCRAPE_DRAIN_WAIT_S)  # an IBM job's metrics() may hold the recorder on the network
        except Exception as exc:  # noqa: BLE001
            report_internal("recorder", exc)
        return []


_drain_collector: _DrainOnCollect | None = None


def install_drain_collector() -> None:
    """Put the drain in front of every collector in the default registry (idempotent)."""
    global _drain_collector
    if _drain_collector is not None:
        return
    from prometheus_client import REGISTRY

    _drain_collector = _DrainOnCollect()
    REGISTRY.register(_drain_collector)


OPT_IN_CIRCUITS, OPT_IN_VALUES, OPT_IN_OUTCOMES = 8, 256, 64


def _record_opt_in(rec: JobRecord, settings: Any) -> None:
    """Circuit parameters and measured counts, only when the user turned them on (JSON attributes)."""
    import json

    if settings.record_parameters:
        circuits = rec.context.get(CTX_CIRCUITS)
        if circuits is not None:
            if not isinstance(circuits, (list, tuple)):
                circuits = [circuits]
            params = [_parameters_of(circuits[i]) for i in range(min(len(circuits), OPT_IN_CIRCUITS))]
            rec.attributes[Attr.PARAMETERS] = json.dumps(params)
    if settings.record_results:
        counts = rec.context.get(CTX_COUNTS)
        if counts:
            if isinstance(counts, dict):
                counts = [counts]
            top = [dict(sorted((c or {}).items(), key=lambda kv: -kv[1])[:OPT_IN_OUTCOMES])
                   for c in (counts[i] for i in range(min(len(counts), OPT_IN_CIRCUITS)))]
            rec.attributes[Attr.COUNTS] = json.dumps(top)


def _parameters_of(circuit: Any) -> list[float]:
    """Numeric gate parameters of a bound circuit (Qiskit) or tape (PennyLane), in order."""
    if hasattr(circuit, "get_parameters"):  # a PennyLane QuantumScript
        values = circuit.get_parameters(trainable_only=False)
    else:
        values = [p for inst in getattr(circuit, "data", ()) for p in getattr(inst.operation, "params", ())]
    out: list[float] = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue  # an unbound parameter or a non-numeric argument
        if len(out) >= OPT_IN_VALUES:
            break
    return out


def record_job(record: JobRecord) -> None:
    """Record a job that was observed after the fact (no span of its own)."""
    h = JobHandle(record, None, time.perf_counter())
    finish_job(h)


# Series a job may update: attribute -> (metric, method, its labels from (backend, provider, op, status, purpose)).
_SERIES_SPEC: dict[str, tuple[str, str, Callable[..., tuple]]] = {
    "jobs": ("qobs_jobs_total", "inc", lambda b, p, op, st, pu: (b, p, op, st)),
    "circuits": ("qobs_circuits_total", "inc", lambda b, p, op, st, pu: (b, p, op)),
    "shots": ("qobs_shots_total", "inc", lambda b, p, op, st, pu: (b, p, pu)),
    "analytic": ("qobs_analytic_circuits_total", "inc", lambda b, p, op, st, pu: (b, p, pu)),
    "depth": ("qobs_circuit_depth", "observe", lambda b, *_: (b,)),
    "width": ("qobs_circuit_width_qubits", "observe", lambda b, *_: (b,)),
    "twoq": ("qobs_circuit_two_qubit_gates", "observe", lambda b, *_: (b,)),
    "transpile": ("qobs_transpile_duration_seconds", "observe", lambda b, *_: (b,)),
    "queue": ("qobs_queue_duration_seconds", "observe", lambda b, *_: (b,)),
    "execution": ("qobs_execution_duration_seconds", "observe", lambda b, *_: (b,)),
    "duration": ("qobs_job_duration_seconds", "observe", lambda b, p, op, st, pu: (b, op)),
}


_HISTOGRAMS = ("depth", "width", "twoq", "transpile", "queue", "execution", "duration")


class _Series:
    """The series one kind of job updates (same backend, provider, operation, status and purpose),
    so that a job costs one dict lookup rather than one per metric. Each series is created on first
    use (a series never updated is not exposed, as before).

    Inside a recorder batch, jobs add to this bundle's tallies (``_n``: jobs, circuits, shots, analytic
    circuits; ``_h``: the values of each histogram) and ``_apply`` updates each series once per batch,
    so a job takes no lock of its own."""

    __slots__ = ("_dirty", "_h", "_key", "_many", "_n", *_SERIES_SPEC)

    def __init__(self, key: tuple) -> None:
        self._key = key
        self._n = [0, 0, 0, 0]
        self._h: tuple[list[float], ...] = tuple([] for _ in _HISTOGRAMS)
        self._many: dict[str, Callable[[list[float]], None]] = {}
        self._dirty = False

    def __getattr__(self, name: str) -> Any:
        spec = _SERIES_SPEC.get(name)
        if spec is None:
            raise AttributeError(name)
        metric, method, labels = spec
        fn = getattr(_metrics.instruments()[metric].child(*labels(*self._key)), method)
        setattr(self, name, fn)
        return fn

    def many(self, name: str) -> Callable[[list[float]], None]:
        fn = self._many.get(name)
        if fn is None:
            metric, _, labels = _SERIES_SPEC[name]
            fn = self._many[name] = _metrics.instruments()[metric].child(*labels(*self._key)).observe_many
        return fn

    def _apply(self) -> None:
        n, h = self._n, self._h
        self._n, self._h = [0, 0, 0, 0], tuple([] for _ in _HISTOGRAMS)
        self._dirty = False
        _apply_tallies(self, n, h)


def _apply_tallies(s: _Series, n: list[int], h: tuple[list[float], ...]) -> None:
    """Update ``s``'s series by tallies ``n`` (jobs, circuits, shots, analytic circuits) and ``h``."""
    if n[0]:
        s.jobs(n[0])
    if n[1]:
        s.circuits(n[1])
    if n[2]:
        s.shots(n[2])
    if n[3]:
        s.analytic(n[3])
    for name, values in zip(_HISTOGRAMS, h, strict=True):
        if values:
            s.many(name)(values)


_batch_owner: int | None = None  # the thread whose recorder batch is tallying metrics
_dirty: list[_Series] = []


def _batch_begin() -> bool:
    """Start tallying this thread's job metrics (True if this call started it: it must end it)."""
    global _batch_owner
    if _batch_owner is not None:
        return False
    _batch_owner = threading.get_ident()
    return True


def _batch_end() -> None:
    """Apply the tallies of the batch to the series, and stop tallying."""
    global _batch_owner, _dirty
    dirty, _dirty = _dirty, []
    _batch_owner = None
    for s in dirty:
        try:
            s._apply()
        except Exception as exc:  # noqa: BLE001
            report_internal("metrics", exc)


_series: dict[tuple, _Series] = {}
_SERIES_MAX = 4096


def _record_metrics(rec: JobRecord) -> None:
    b, p, op = rec.backend, rec.provider, rec.operation
    key = (b, p, op, rec.status, rec.purpose)
    s = _series.get(key)
    if s is None:
        if len(_series) >= _SERIES_MAX:
            _series.clear()
        s = _series[key] = _Series(key)
    if _batch_owner is not None and _batch_owner == threading.get_ident():
        _tally(s, rec)
    else:
        _update(s, rec)
    if rec.submission_reason is not None:
        _metrics.instruments()["qobs_submission_errors_total"].child(b, p, rec.submission_reason).inc()
    if rec.cost is not None and rec.cost_source:
        child = _metrics.instruments()["qobs_cost_usd_total"].child(b, rec.cost_source)  # the series exists at 0
        if rec.cost:
            child.inc(float(rec.cost))
    elif not rec.priced:
        _metrics.instruments()["qobs_unpriced_jobs_total"].child(b).inc()


def _tally(s: _Series, rec: JobRecord) -> None:
    """Inside a recorder batch: add the job to its bundle's tallies (applied at the batch's end)."""
    if not s._dirty:
        s._dirty = True
        _dirty.append(s)
    _add(s._n, s._h, rec)


def _update(s: _Series, rec: JobRecord) -> None:
    """Outside a batch: update the job's series at once."""
    n, h = [0, 0, 0, 0], tuple([] for _ in _HISTOGRAMS)
    _add(n, h, rec)
    _apply_tallies(s, n, h)


def _add(n: list[int], h: tuple[list[float], ...], rec: JobRecord) -> None:
    """Add one job's counts to ``n`` and its histogram values to ``h`` (in ``_HISTOGRAMS`` order)."""
    n[0] += 1
    if rec.circuits:
        n[1] += rec.circuits
    if rec.shots:
        n[2] += rec.shots
    elif rec.shots == 0 and rec.circuits and rec.status == "ok":
        n[3] += rec.circuits
    depth, width, twoq, transpile, queue, execution, duration = h
    for st in rec.stats:
        depth.append(st.depth)
        width.append(st.width)
        twoq.append(st.two_qubit_gates)
    if rec.transpile_s is not None and rec.transpile_observed_here:
        transpile.append(rec.transpile_s)
    if rec.queue_s is not None:
        queue.append(rec.queue_s)
    if rec.execution_s is not None:
        execution.append(rec.execution_s)
    if rec.duration_s is not None and rec.submission_reason is None:
        duration.append(rec.duration_s)


def span_attributes(rec: JobRecord) -> dict[str, Any]:
    """The contract span attributes of a job record (None values left out)."""
    a: dict[str, Any] = {
        Attr.JOB_STATUS: rec.status, Attr.CIRCUITS: rec.circuits, Attr.PURPOSE: rec.purpose,
        Attr.BINDINGS: rec.bindings, Attr.SHOTS: rec.shots, Attr.SHOTS_REQUESTED: rec.shots_requested,
        Attr.PRECISION: rec.precision, Attr.JOB_ID: rec.job_id, Attr.SESSION_ID: rec.session_id,
        Attr.SIMULATOR: rec.simulator, Attr.TRANSPILE_S: rec.transpile_s, Attr.QUEUE_S: rec.queue_s,
        Attr.EXECUTION_S: rec.execution_s, Attr.ERROR_TYPE: rec.error_type,
        Attr.SUBMISSION_REASON: rec.submission_reason, Attr.TRAINABLE_PARAMS: rec.trainable_params,
        Attr.MODEL: rec.model,
    }
    if rec.stats:
        a[Attr.DEPTH], a[Attr.WIDTH], a[Attr.TWO_QUBIT_GATES], a[Attr.DEPTH_BEFORE] = _shape_maxima(rec.stats)
    if rec.cost is not None:
        a[Attr.COST_AMOUNT] = float(rec.cost)
        a[Attr.COST_CURRENCY] = rec.cost_currency
        a[Attr.COST_SOURCE] = rec.cost_source
    rt = runtime.current()
    if rt is not None:
        a[Attr.RUN_ID] = rt.run_id
    a.update(rec.attributes)
    return {k: v for k, v in a.items() if v is not None}


def _end_span(handle: JobHandle) -> None:
    span = handle.span
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    rec = handle.record
    span.set_attributes(span_attributes(rec))
    if rec.status in ("error", "blocked"):  # a blocked submission raised to its caller
        span.set_status(Status(StatusCode.ERROR, rec.error_type or "error"))
    start = getattr(span, "start_time", None)
    if handle.t_end is not None and isinstance(start, int):  # recorded later: end where the job ended
        span.end(end_time=start + int((handle.t_end - handle.t0) * 1e9))
    else:
        span.end()


def _ids(span: Any) -> tuple[str | None, str | None]:
    if span is None:
        return None, None
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None, None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def _shape_maxima(stats: list[CircuitStats]) -> tuple[int | None, int | None, int | None, int | None]:
    """The job's largest depth, width, two-qubit gate count and depth before transpilation (None when unknown)."""
    if not stats:
        return None, None, None, None
    if len(stats) == 1:  # the common case: no generator per figure
        s0 = stats[0]
        return s0.depth, s0.width, s0.two_qubit_gates, s0.depth_before
    return (max(s.depth for s in stats), max(s.width for s in stats), max(s.two_qubit_gates for s in stats),
            max((s.depth_before for s in stats if s.depth_before is not None), default=None))


JOB_COLUMNS = ("run_id", "ts", "backend", "provider", "operation", "purpose", "circuits", "bindings", "shots",
               "shots_requested", "depth", "width", "two_qubit_gates", "depth_before", "transpile_s", "queue_s",
               "execution_s", "duration_s", "status", "error_type", "submission_reason", "cost", "cost_currency",
               "cost_source", "job_id", "session_id", "trace_id", "span_id", "attrs")


def _store_job(handle: JobHandle) -> None:
    rt = runtime.current()
    if rt is None or rt.writer is None:
        return
    rec = handle.record
    trace_id, span_id = _ids(handle.span)
    depth, width, twoq, before = _shape_maxima(rec.stats)
    rt.writer.insert_values("jobs", JOB_COLUMNS, (
        rt.run_id, rec.started_at, rec.backend, rec.provider, rec.operation, rec.purpose, rec.circuits, rec.bindings,
        rec.shots, rec.shots_requested, depth, width, twoq, before, rec.transpile_s, rec.queue_s, rec.execution_s,
        rec.duration_s, rec.status, rec.error_type, rec.submission_reason,
        None if rec.cost is None else str(rec.cost), rec.cost_currency, rec.cost_source, rec.job_id,
        rec.session_id, trace_id, span_id, rec.attributes or None))


def record_event(kind: str, subject: str | None = None, data: Mapping[str, Any] | None = None, *,
                 start_run: bool = True) -> None:
    """Store an event (budget crossing, calibration change, fidelity check, ...). Without ``start_run``, only
    into a run going on: an event of a run that has ended (a background thread's, late) is dropped rather than
    starting another."""
    with contained("store"):
        rt = runtime.current() or (runtime.start() if start_run else None)
        if rt is not None and rt.writer is not None:
            rt.writer.insert("events", {"run_id": rt.run_id, "ts": time.time(), "kind": kind, "subject": subject,
                                        "data": dict(data) if data else None})


def record_step(model: str, step: int, metrics: Mapping[str, Any], *, duration_s: float | None = None,
                samples: int | None = None, cost: Decimal | None = None, span: Any | None = None) -> None:
    """Store one training step's figures."""
    with contained("store"):
        rt = runtime.current() or runtime.start()
        if rt is not None and rt.writer is not None:
            trace_id = _ids(span)[0]
            rt.writer.insert("steps", {"run_id": rt.run_id, "model": model, "step": step, "ts": time.time(),
                                       "duration_s": duration_s, "samples": samples,
                                       "cost": None if cost is None else str(cost), "trace_id": trace_id,
                                       "metrics": dict(metrics)})


def annotate_run(**fields: Any) -> None:
    """Add provenance to the current run (``seed=``, ``name=``, or anything into ``extra``)."""
    with contained("store"):
        rt = runtime.current() or runtime.start()
        if rt is None or rt.writer is None:
            return
        row: dict[str, Any] = {"run_id": rt.run_id}
        for k in ("seed", "name"):
            if k in fields:
                row[k] = fields.pop(k)
        if fields:
            from qobs.redact import redact

            row["extra"] = redact(fields)
        rt.writer.update_run(row)


def tracer() -> Any:
    """The tracer qobs uses (the application's provider when it set one)."""
    t = _tracer()
    if t is None:
        from opentelemetry import trace

        t = trace.get_tracer("qobs")
    return t


def traceparent() -> str | None:
    """The W3C traceparent of the active span, to carry with a circuit (``circuit.metadata``)."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


_env_parent: list[Any] = []  # [the environment's context, or None], read once per process


def env_parent() -> Any | None:
    """The OTel context named by the ``TRACEPARENT`` (and ``TRACESTATE``) environment variables, or None.

    OpenTelemetry's environment-variable carrier: a CI runner, a scheduler or a parent process hands its
    trace down to the processes it starts, so a run's spans join the pipeline's trace. A malformed value
    is ignored (spans start their own trace)."""
    if not _env_parent:
        ctx = None
        value = os.environ.get("TRACEPARENT", "").strip()
        if value:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            carrier = {"traceparent": value}
            state = os.environ.get("TRACESTATE", "").strip()
            if state:
                carrier["tracestate"] = state
            ctx = TraceContextTextMapPropagator().extract(carrier)
            if not trace.get_current_span(ctx).get_span_context().is_valid:
                ctx = None
        _env_parent.append(ctx)
    return _env_parent[0]


def default_parent() -> Any | None:
    """The context a qobs span starts in when its caller names none: None (the active context) when a span
    is active or the environment names no trace, else the environment's (``env_parent``)."""
    env = env_parent()
    if env is None:
        return None
    from opentelemetry import trace

    return None if trace.get_current_span().get_span_context().is_valid else env


def context_from_traceparent(value: str | None) -> Any | None:
    """An OTel context whose parent is the span named by a W3C traceparent."""
    if not value:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": value})
