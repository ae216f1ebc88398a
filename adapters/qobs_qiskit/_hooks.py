"""The Qiskit hooks. Imported only once qiskit is (see ``QiskitAdapter.on_import``).

Every piece of qobs code here runs inside ``contained``; the user's call runs outside it, so its
exceptions reach the user unchanged and its return values are the SDK's own objects.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import heapq
import itertools
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from datetime import datetime
from typing import Any

from qobs import _forksafe, runtime, telemetry
from qobs._context import CTX_NOISE_MODEL, CURRENT_MODEL
from qobs.contract import Attr, Span
from qobs.errors import contained, report_internal
from qobs.telemetry import (
    CTX_BACKEND,
    CTX_CIRCUITS,
    CTX_COUNTS,
    CTX_METRICS,
    CTX_RESULT,
    CircuitStats,
    JobHandle,
    JobRecord,
    SubmissionRefused,
    SubmitRequest,
)

COMPONENT = "adapter:qiskit"
# Attributes this adapter adds to job records (span attributes and the store's attrs column).
FALLBACK_FROM = "qobs.fallback.requested_backend"
FALLBACK_REASON = "qobs.fallback.reason"
FALLBACK_UNSUPPORTED = "qobs.fallback.unsupported"
TWO_Q_BEFORE = "quantum.circuit.two_qubit_gates_before_transpile"

_IDENT_MAX = 4096   # circuit objects remembered by identity
_STRUCT_MAX = 512   # circuit structures remembered
_RESULT_WAIT_S = 5.0


_contained = contained(COMPONENT)  # one reusable instance: entered several times per job


class _TLS(threading.local):
    """Per-thread scope. qobs's own threads (named ``qobs-*``: simulated QPU workers, probes'
    helpers) start inside the scope: what they run for a job already observed is not a new job."""

    current: Any = None    # the tracker of the job being submitted on this thread

    def __init__(self) -> None:
        # > 0 while inside an observed job/transpile on this thread
        self.depth = 1 if threading.current_thread().name.startswith("qobs-") else 0


_tls = _TLS()


class _State:
    def __init__(self) -> None:
        self.patcher: Any = None
        self.generation = 0
        self.installed: set[str] = set()
        self.result_types: set[type] = set()
        self.lock = threading.RLock()
        self.ident: dict[int, tuple[Any, int, CircuitStats]] = {}
        self.struct: dict[Any, CircuitStats] = {}
        self.transpiled: dict[int, tuple[Any, int, int, float]] = {}
        self.pubs: dict[tuple[int, int | None], tuple[Any, int, Any]] = {}
        self.backends: dict[int, tuple[Any, str, str, bool | None]] = {}  # id -> (ref, name, provider, simulator)
        self.descs: dict[tuple, tuple[Any, tuple[Any, ...], tuple[int, ...], _Desc]] = {}
        self.fast: dict[int, _Fast] = {}  # id(target) -> its last lean job's submission


_state = _State()
_pending: dict[int, _Tracker] = {}
_lean: dict[int, _Lean] = {}  # id(job) -> its lean-lane entry, until its result() or the finisher records it


def reset() -> None:
    """Forget patches' bookkeeping and caches (the patcher restored the patches themselves)."""
    global _state
    gen = _state.generation + 1
    _state = _State()
    _state.generation = gen
    _pending.clear()
    _lean.clear()
    _lean_types.clear()


# --- installation -------------------------------------------------------------------------------
def install(module_name: str, patcher: Any) -> None:
    """Hook what qiskit offers (idempotent); later modules (aer, runtime) only need a re-walk."""
    with _state.lock:
        _state.patcher = patcher
        if "qiskit" not in _state.installed:
            _state.installed.add("qiskit")
            _install_qiskit(patcher)
        else:
            _walk_all()
        _state.installed.add(module_name)


_HIERARCHY: list[tuple[type, str, Callable[[Any], Any]]] = []


def _install_qiskit(patcher: Any) -> None:
    import qiskit
    import qiskit.compiler
    import qiskit.compiler.transpiler as transpiler_mod
    from qiskit.passmanager import BasePassManager
    from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2
    from qiskit.primitives.primitive_job import PrimitiveJob
    from qiskit.providers import BackendV2

    _HIERARCHY.clear()
    _HIERARCHY.extend([
        (BaseSamplerV2, "run", _make_primitive_run("sampler")),
        (BaseEstimatorV2, "run", _make_primitive_run("estimator")),
        (BackendV2, "run", _make_backend_run),
        (BasePassManager, "run", _make_passmanager_run),
    ])
    for base, name, make in _HIERARCHY:
        _hook_init_subclass(patcher, base, name, make)
    _walk_all()
    patcher.wrap(PrimitiveJob, "_submit", _make_submit)
    for owner in (qiskit, qiskit.compiler, transpiler_mod):
        if hasattr(owner, "transpile"):
            patcher.wrap(owner, "transpile", _make_transpile)
    try:
        import qiskit.transpiler as tmod
        import qiskit.transpiler.preset_passmanagers as pmod
        owners = [qiskit, tmod, pmod, transpiler_mod]
        try:
            import qiskit.transpiler.preset_passmanagers.generate_preset_pass_manager as gmod
            owners.append(gmod)
        except ImportError:
            pass
        for owner in owners:
            if hasattr(owner, "generate_preset_pass_manager") and callable(owner.generate_preset_pass_manager):
                patcher.wrap(owner, "generate_preset_pass_manager", _make_generate_pm)
    except ImportError:
        pass


def _walk_all() -> None:
    for base, name, make in _HIERARCHY:
        stack, seen = [base], set()
        while stack:
            cls = stack.pop()
            if cls in seen:
                continue
            seen.add(cls)
            _hook_class(cls, name, make)
            stack.extend(type.__subclasses__(cls))


def _hook_class(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    fn = cls.__dict__.get(name)
    if fn is None or not callable(fn) or getattr(fn, "__isabstractmethod__", False):
        return
    if _state.patcher is not None:
        _state.patcher.wrap(cls, name, make)


def _hook_init_subclass(patcher: Any, base: type, name: str, make: Callable[[Any], Any]) -> None:
    """Classes defined after instrument() get their own ``run`` wrapped as they are created."""
    own = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        if own is not None:
            own.__func__(cls, **kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)
        with _contained:
            _hook_class(cls, name, make)

    __init_subclass__.__qobs_wrapped__ = own or object.__init_subclass__  # type: ignore[attr-defined]
    patcher.wrap(base, "__init_subclass__", lambda _orig: classmethod(__init_subclass__))


# --- SDK names, imported on first use (importing this module must not import more than qiskit) ---
@functools.cache
def _qc_type() -> type:
    from qiskit import QuantumCircuit

    return QuantumCircuit


@functools.cache
def _pub_type(kind: str) -> type:
    if kind == "sampler":
        from qiskit.primitives.containers.sampler_pub import SamplerPub

        return SamplerPub
    from qiskit.primitives.containers.estimator_pub import EstimatorPub

    return EstimatorPub


@functools.cache
def _otel_trace() -> Any:
    from opentelemetry import trace

    return trace


# --- descriptions ------------------------------------------------------------------------------
class _Desc:
    """What is known about a job at submission."""

    __slots__ = ("backend", "backend_obj", "backend_ref", "bindings", "circuits", "lengths", "operation", "parent",
                 "precision", "provider", "pubs", "run_input", "session_id", "shaped", "shapes", "shots_req",
                 "shots_total", "simulator", "sizes")

    def __init__(self, operation: str, backend: str, provider: str) -> None:
        self.operation, self.backend, self.provider = operation, backend, provider
        self.backend_obj: Any = None
        self.backend_ref: Any = None  # a kept description's backend, held weakly (``_keep``; ``backend_of``)
        self.simulator: bool | None = None
        self.pubs: list[Any] = []
        self.run_input: list[Any] = []
        self.circuits = 0
        self.bindings: int | None = None
        self.shots_req: int | None = None
        self.shots_total: int | None = None
        self.precision: float | None = None
        self.sizes: list[int] = []  # bindings per circuit of run_input / pubs
        # their shapes, read at submission (cached: a lookup) so that a circuit changed later does not count
        self.shapes: list[CircuitStats | None] = []
        self.session_id: str | None = None
        self.parent: Any = None
        # (stats per circuit, transpile share, two-qubit gates before transpilation): made once, when the
        # description is kept (``_keep``) or by its job (``_shapes``); a repeated job reuses them
        self.shaped: tuple[list[CircuitStats], float | None, int | None] | None = None
        self.lengths: tuple[int, ...] | None = None  # its circuits' lengths, when it is kept for repeated jobs


def _provider_of(backend: Any) -> str:
    named = getattr(type(backend), "provider_name", None)
    if isinstance(named, str) and named:
        return named
    mod = type(backend).__module__
    if mod.startswith("qiskit_aer"):
        return "aer"
    if mod.startswith("qiskit_ibm_runtime"):
        return "ibm"
    if mod.startswith("qiskit."):
        return "qiskit"
    return mod.split(".", 1)[0]


def _backend_name(backend: Any) -> str:
    name = getattr(backend, "name", None)
    if callable(name):  # BackendV1
        name = name()
    return str(name) if name else type(backend).__name__


def _simulator(backend: Any, provider: str) -> bool | None:
    flag = getattr(backend, "simulator", None)
    if isinstance(flag, bool):
        return flag
    mod = type(backend).__module__
    if provider in ("aer", "qiskit") or "fake_provider" in mod:
        return True
    if provider == "ibm":
        return False
    return None


def _describe_backend(desc: _Desc, backend: Any) -> None:
    desc.backend_obj = backend
    hit = _state.backends.get(id(backend))
    if hit is None or hit[0]() is not backend:
        name, provider = _backend_name(backend), _provider_of(backend)
        hit = (weakref.ref(backend), name, provider, _simulator(backend, provider))
        with _state.lock:
            if len(_state.backends) >= _IDENT_MAX:
                _state.backends.clear()
            _state.backends[id(backend)] = hit
    _, desc.backend, desc.provider, desc.simulator = hit


def _primitive_desc(prim: Any, kind: str) -> _Desc:
    backend = getattr(prim, "_backend", None)
    mod = type(prim).__module__
    if backend is not None and hasattr(backend, "run"):
        desc = _Desc(kind, "", "")
        _describe_backend(desc, backend)
        if mod.startswith("qiskit_ibm_runtime"):
            desc.provider = "ibm"
            mode = getattr(prim, "_mode", None)
            sid = getattr(mode, "session_id", None) if mode is not None and mode is not backend else None
            desc.session_id = sid if isinstance(sid, str) else None
        return desc
    if mod.startswith("qiskit.primitives"):
        desc = _Desc(kind, "statevector", "qiskit")
        desc.simulator = True
        return desc
    if mod.startswith("qiskit_aer"):
        desc = _Desc(kind, "aer_simulator", "aer")
        desc.simulator = True
        return desc
    return _Desc(kind, type(prim).__name__, mod.split(".", 1)[0])


def _default_shots(prim: Any) -> int | None:
    for getter in (lambda: prim.options.default_shots, lambda: prim._default_shots,
                   lambda: prim.default_shots):
        try:
            v = getter()
        except Exception:  # noqa: BLE001 - attributes differ between implementations
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _default_precision(prim: Any) -> float | None:
    for getter in (lambda: prim.options.default_precision, lambda: prim._default_precision):
        try:
            v = getter()
        except Exception:  # noqa: BLE001
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _reused(key: tuple, target: Any, circuits: list[Any]) -> _Desc | None:
    """The description of a job made of the same target and circuit objects (same lengths) as one seen
    before, with the same shots: a repeated job is described once. Read-only, and without its circuits
    (``_keep``): the full path takes a copy with them (``_with_circuits``)."""
    hit = _state.descs.get(key)
    if hit is None or hit[0]() is not target:
        return None
    refs, lengths = hit[1], hit[2]
    for i, c in enumerate(circuits):
        if refs[i]() is not c or lengths[i] != len(c):
            return None
    return hit[3]


def _keep(key: tuple, target: Any, circuits: list[Any], desc: _Desc) -> None:
    """Remember ``desc`` for ``_reused`` unless it depends on more than its key (a tracing parent, an
    IBM session). What is kept holds no circuit: the cache must not keep alive circuits the user let go (a
    loop that binds a new circuit per job would keep thousands). It is a copy with their shapes worked out
    and without them, its backend held weakly (``backend_of``); ``_with_circuits`` gives a job of the full path
    its own circuits and backend back."""
    if desc.parent is not None or desc.session_id is not None or desc.provider == "ibm":
        return
    try:
        refs = tuple(weakref.ref(c) for c in circuits)
        ref = weakref.ref(target)
    except TypeError:
        return
    desc.shaped = _shaped(desc)  # this job's too (``_shapes``): worked out once
    kept = copy.copy(desc)
    kept.lengths = tuple(len(c) for c in circuits)
    kept.run_input = kept.pubs = None
    if kept.backend_obj is not None:
        try:
            kept.backend_ref, kept.backend_obj = weakref.ref(kept.backend_obj), None
        except TypeError:
            return
    entry = (ref, refs, kept.lengths, kept)
    with _state.lock:
        if len(_state.descs) >= _IDENT_MAX:
            _state.descs.clear()
        _state.descs[key] = entry


def _described(key: tuple | None, target: Any, circuits: list[Any], build: Callable[..., _Desc], *args: Any) -> _Desc:
    """``build(*args)``'s description, or the one kept for ``key`` (None: not a repeatable job)."""
    if key is None:
        return build(*args)
    desc = _reused(key, target, circuits)
    if desc is None:
        desc = build(*args)
        _keep(key, target, circuits, desc)
    return desc


def backend_of(desc: _Desc) -> Any:
    """The backend object of ``desc`` (None: none, or a kept description's backend is gone)."""
    ref = desc.backend_ref
    return desc.backend_obj if ref is None else ref()


def _with_circuits(desc: _Desc, run_input: Any) -> _Desc:
    """``desc`` with this job's circuits: a reused description (``_keep`` kept it without them) is copied and
    given ``run_input`` (a backend's circuits, or a sampler's bare circuits, which is all a reused one has)."""
    if desc.run_input is not None:
        return desc
    d = copy.copy(desc)
    d.backend_obj, d.backend_ref = backend_of(desc), None
    circuits = list(run_input) if isinstance(run_input, (list, tuple)) else [run_input]
    if d.operation == "backend_run":
        d.run_input, d.pubs = circuits, []
    else:
        d.run_input, d.pubs = [], _coerce_all(_pub_type(d.operation), circuits, d.shots_req, d.operation)
    return d


def _describe_primitive(prim: Any, kind: str, pubs: list[Any], kwargs: dict[str, Any]) -> _Desc:
    key = None
    if kind == "sampler" and pubs and not telemetry.tracing_possible():
        QuantumCircuit = _qc_type()
        for p in pubs:
            if type(p) is not QuantumCircuit or p.num_parameters:
                break
        else:  # bare bound circuits
            shots = kwargs.get("shots")
            key = ("sampler", id(prim), shots if shots is not None else _default_shots(prim), *map(id, pubs))
    return _described(key, prim, pubs, _describe_primitive_anew, prim, kind, pubs, kwargs)


def _describe_primitive_anew(prim: Any, kind: str, pubs: list[Any], kwargs: dict[str, Any]) -> _Desc:
    desc = _primitive_desc(prim, kind)
    Pub = _pub_type(kind)
    if kind == "sampler":
        shots = kwargs.get("shots")
        arg = shots if shots is not None else _default_shots(prim)
    else:
        precision = kwargs.get("precision")
        arg = precision if precision is not None else _default_precision(prim)
    desc.pubs = coerced = _coerce_all(Pub, pubs, arg, kind)
    bindings = shots_total = 0
    precisions: list[float] = []
    shots_known = kind == "sampler"
    for pub in coerced:
        if pub is None:
            bindings += 1
            shots_known = False
            continue
        n = max(math.prod(pub.parameter_values.shape), 1)  # numpy's size: a ufunc reduction per job
        bindings += n
        desc.sizes.append(n)
        desc.shapes.append(stats_of(pub.circuit))
        if kind == "sampler":
            if pub.shots is None:
                shots_known = False
            else:
                shots_total += pub.shots * n
        elif pub.precision is not None:
            precisions.append(float(pub.precision))
    desc.circuits = desc.bindings = bindings
    if kind == "sampler":
        desc.shots_req = arg if isinstance(arg, int) else None
        desc.shots_total = shots_total if shots_known else None
    else:
        desc.precision = max(precisions) if precisions else None
    if telemetry.tracing_possible():
        desc.parent = _parent([p.circuit for p in coerced if p is not None])
    return desc


def _coerce_all(pub_type: Any, pubs: list[Any], arg: Any, kind: str) -> list[Any]:
    """``_coerce`` of each pub; None for an invalid one (the SDK raises it to the user)."""
    coerced = []
    for pub in pubs:
        try:
            coerced.append(_coerce(pub_type, pub, arg, kind))
        except Exception:  # noqa: BLE001
            coerced.append(None)
    return coerced


def _coerce(pub_type: Any, pub: Any, arg: Any, kind: str) -> Any:
    """``pub_type.coerce(pub, arg)``. A sampler pub that is a bare circuit (jobs repeated on the same
    circuit) is validated once per circuit object and length, like ``stats_of``; the cache holds
    the circuit weakly (its empty bindings array, not the pub, which would keep it alive)."""
    if kind != "sampler" or type(pub) is not _qc_type() or not (arg is None or type(arg) is int):
        return pub_type.coerce(pub, arg)
    st = _state
    key = (id(pub), arg)
    n = len(pub)
    hit = st.pubs.get(key)
    if hit is not None and hit[1] == n and hit[0]() is pub and pub.num_parameters == 0:
        return pub_type(pub, hit[2], arg, validate=False)  # what validation checks still holds
    out = pub_type.coerce(pub, arg)
    with st.lock:
        st.pubs[key] = (weakref.ref(pub), n, out.parameter_values)
        while len(st.pubs) > _IDENT_MAX:
            st.pubs.pop(next(iter(st.pubs)))
    return out


def _describe_backend_run(backend: Any, run_input: Any, kwargs: dict[str, Any]) -> _Desc:
    QuantumCircuit = _qc_type()
    key, circuits = None, []
    if not kwargs.get("parameter_binds") and not telemetry.tracing_possible():
        if type(run_input) is QuantumCircuit:  # one circuit (most jobs): no generator to check a list with
            circuits = [run_input]
        elif type(run_input) in (list, tuple) and run_input and all(type(c) is QuantumCircuit for c in run_input):
            circuits = run_input
        if circuits:
            shots = kwargs.get("shots")
            if shots is None:
                shots = getattr(getattr(backend, "options", None), "shots", None)
            key = ("backend_run", id(backend), shots if isinstance(shots, int) else None, *map(id, circuits))
    return _described(key, backend, circuits, _describe_backend_run_anew, backend, run_input, kwargs)


def _describe_backend_run_anew(backend: Any, run_input: Any, kwargs: dict[str, Any]) -> _Desc:
    QuantumCircuit = _qc_type()
    desc = _Desc("backend_run", "", "")
    _describe_backend(desc, backend)
    # A list or tuple of circuits, else one run input (a circuit, a schedule; a string is not eleven circuits)
    circuits = list(run_input) if isinstance(run_input, (list, tuple)) else [run_input]
    desc.run_input = circuits
    binds = kwargs.get("parameter_binds")
    total = 0
    if binds:
        for i in range(len(circuits)):
            n = 1
            if i < len(binds) and binds[i]:
                n = max(len(next(iter(binds[i].values()))), 1)
            desc.sizes.append(n)
            total += n
    else:
        desc.sizes = [1] * len(circuits)
        total = len(circuits)
    desc.shapes = [stats_of(c) if isinstance(c, QuantumCircuit) else None for c in circuits]
    desc.circuits = total
    desc.bindings = total
    shots = kwargs.get("shots")
    if shots is None:
        opts = getattr(backend, "options", None)
        shots = getattr(opts, "shots", None) if opts is not None else None
    if isinstance(shots, int) and not isinstance(shots, bool):
        desc.shots_req, desc.shots_total = shots, shots * total
    if telemetry.tracing_possible():
        desc.parent = _parent([c for c in circuits if isinstance(c, QuantumCircuit)])
    return desc


def _parent(circuits: list[Any]) -> Any:
    """The OTel context to parent the job span on: the active span, else a circuit's traceparent."""
    trace = _otel_trace()
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # no tracing: nothing to parent
    if trace.get_current_span().get_span_context().is_valid:
        return None
    for c in circuits:
        md = getattr(c, "metadata", None)
        if isinstance(md, dict) and isinstance(md.get("traceparent"), str):
            return telemetry.context_from_traceparent(md["traceparent"])
    return None


# --- circuit shapes ----------------------------------------------------------------------------
def _two_qubit(circ: Any) -> int:
    return int(circ.num_nonlocal_gates())


def _struct_key(circ: Any) -> Any:
    return (circ.num_qubits, circ.num_clbits,
            tuple((inst.operation.name, inst.qubits) for inst in circ.data))


def stats_of(circ: Any) -> CircuitStats:
    """Width, depth and two-qubit gates of a circuit, never recomputed for a structure already seen.

    Looked up by identity first (the same object, same length), then by structure (operation
    names and qubits in order, so rebinding parameters does not cost a new ``depth()``). A circuit
    mutated in place without changing its length keeps its old figures.
    """
    st = _state
    n = len(circ)
    hit = st.ident.get(id(circ))
    if hit is not None and hit[1] == n and hit[0]() is circ:
        return hit[2]
    key = _struct_key(circ)
    stats = st.struct.get(key)
    if stats is None:
        before = st.transpiled.get(id(circ))
        depth_before = before[1] if before is not None and before[0]() is circ else None
        stats = CircuitStats(width=int(circ.num_qubits), depth=int(circ.depth()),
                             two_qubit_gates=_two_qubit(circ), depth_before=depth_before)
        with st.lock:
            st.struct[key] = stats
            while len(st.struct) > _STRUCT_MAX:
                st.struct.pop(next(iter(st.struct)))
    try:
        ref = weakref.ref(circ)
    except TypeError:
        return stats
    with st.lock:
        st.ident[id(circ)] = (ref, n, stats)
        while len(st.ident) > _IDENT_MAX:
            st.ident.pop(next(iter(st.ident)))
    return stats


# --- jobs --------------------------------------------------------------------------------------
class _Tracker:
    """An observed job until its outcome is recorded (exactly once, whoever gets there first).

    Light on purpose (locks, not an ``Event``/list): trackers of completed jobs wait in the
    finisher's queue for its grace period, and every container object kept alive there counts
    towards the cyclic GC's thresholds. ``_release`` drops the heavy references (job, record,
    result) as soon as the job is recorded.
    """

    __slots__ = ("_claim", "_done", "ctx", "desc", "gen", "handle", "job", "released", "t_done", "t_end",
                 "t_run")

    def __init__(self, handle: JobHandle, desc: _Desc) -> None:
        self.handle: Any = handle
        self.desc: Any = desc
        self.job: Any = None
        self._claim = threading.Lock()   # taken (non-blocking) by whoever records the job
        self._done = threading.Lock()    # held until the job is recorded
        self._done.acquire()
        self.released = False
        self.gen = _state.generation
        self.t_run: float | None = None
        self.t_end: float | None = None
        self.t_done: float | None = None  # when the job's future completed
        # Listeners run in the submitter's context (contextvars), whichever thread records the job.
        self.ctx: Any = contextvars.copy_context()

    def take(self) -> bool:
        return self._claim.acquire(False)  # atomic: only one caller gets it

    def is_done(self) -> bool:
        return self.released

    def set_done(self) -> None:
        if not self.released:
            self.released = True
            self._done.release()

    def wait_done(self, timeout: float) -> None:
        if self.released:
            return
        if self._done.acquire(timeout=timeout):
            self._done.release()


def _start(desc: _Desc) -> JobHandle:
    h = telemetry.start_job(desc.operation, desc.backend, desc.provider, parent=desc.parent,
                            circuits=desc.circuits, bindings=desc.bindings, shots_requested=desc.shots_req,
                            precision=desc.precision, simulator=desc.simulator, session_id=desc.session_id)
    h.record.context[CTX_BACKEND] = desc.backend_obj
    _shapes(desc, h.record)
    return h


def _shapes(desc: _Desc, rec: Any) -> None:
    """Circuit shapes and the job's share of transpile time and two-qubit gates before transpilation,
    into the record, at submission (a circuit changed later does not count). Worked out once per
    description: a repeated job copies the first one's (each record has its own list)."""
    shaped = desc.shaped
    if shaped is None:
        shaped = desc.shaped = _shaped(desc)
    stats, transpile_s, two_q_before = shaped
    rec.stats = stats.copy()
    if transpile_s is not None:  # the job's share: stored and on the span; the transpile hook observed it
        rec.transpile_s, rec.transpile_observed_here = transpile_s, False
    if two_q_before is not None:
        rec.attributes[TWO_Q_BEFORE] = two_q_before


def _shaped(desc: _Desc) -> tuple[list[CircuitStats], float | None, int | None]:
    """(stats per circuit, transpile share, two-qubit gates before transpilation) of ``desc``'s circuits."""
    stats: list[CircuitStats] = []
    transpile_s = None
    two_q_before = None
    for circ, n, st in zip(_circuits_of(desc), desc.sizes, desc.shapes, strict=False):
        if st is None:  # not a QuantumCircuit
            continue
        stats.extend([st] * n) if n > 1 else stats.append(st)
        hit = _state.transpiled.get(id(circ))
        if hit is not None and hit[0]() is circ:
            transpile_s = (transpile_s or 0.0) + hit[3]
            two_q_before = hit[2] if two_q_before is None else max(two_q_before, hit[2])
    return stats, transpile_s, two_q_before


def _circuits_of(desc: _Desc) -> list[Any]:
    return [p.circuit for p in desc.pubs if p is not None] if desc.pubs else desc.run_input


def _request(desc: _Desc) -> SubmitRequest:
    return SubmitRequest(operation=desc.operation, backend=desc.backend, provider=desc.provider,
                         shots=desc.shots_total or 0, circuits=desc.circuits, backend_obj=desc.backend_obj,
                         circuit_objs=_circuits_of(desc))


def _check(desc: _Desc) -> Any:
    """Ask the guards. A refusal is recorded (status blocked, reason budget) and re-raised unchanged."""
    if not telemetry.guards_wanted():
        return None
    req = None
    with _contained:
        req = _request(desc)
    if req is None:
        return None
    try:
        return telemetry.check_submit(req)
    except SubmissionRefused as exc:
        with _contained:
            h = _start(desc)
            h.record.status, h.record.submission_reason = "blocked", getattr(exc, "reason", "budget") or "budget"
            h.record.error_type = type(exc).__name__
            telemetry.finish_job_later(h, None, contextvars.copy_context())
        raise


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__.lower()
    text = f"{name} {exc}".lower()
    if any(w in text for w in ("credential", "unauthori", "not authori", "token", "forbidden", "401", "403")):
        return "credentials"
    if any(w in text for w in ("rate limit", "ratelimit", "too many requests", "429")):
        return "rate_limit"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError)) or any(
            w in name for w in ("valid", "circuiterror", "qiskiterror", "transpilererror", "aererror")):
        return "validation"
    return "other"


def _submission_failed(tracker: _Tracker | None, exc: BaseException) -> None:
    if tracker is None:
        return
    rec = tracker.handle.record
    rec.status, rec.error_type, rec.submission_reason = "error", type(exc).__name__, _reason(exc)
    tracker.take()
    telemetry.finish_job_later(tracker.handle, None, tracker.ctx)


def _reroute(desc: _Desc, decision: Any, target: Any, kind: str) -> Any:
    """Apply a guard's fallback. Returns the object to call the original ``run`` on."""
    fb = decision.fallback
    requested = desc.backend
    if kind == "backend_run":
        new = fb
    else:
        from qiskit.primitives import BackendEstimatorV2, BackendSamplerV2

        if type(target) in (BackendSamplerV2, BackendEstimatorV2):
            new = copy.copy(target)
            new._backend = fb
        else:
            return None
    _describe_backend(desc, fb)
    telemetry.record_event("budget_fallback", requested, {
        "from": requested, "to": desc.backend, "reason": decision.reason, "operation": desc.operation})
    return new


def _fallback_attrs(handle: JobHandle, requested: str | None, decision: Any, unsupported: bool) -> None:
    if unsupported:
        handle.record.attributes[FALLBACK_UNSUPPORTED] = True
    elif requested is not None:
        handle.record.attributes[FALLBACK_FROM] = requested
        if decision.reason:
            handle.record.attributes[FALLBACK_REASON] = decision.reason


def _described_lane(describe: Callable[..., _Desc], *args: Any) -> tuple[_Desc | None, bool]:
    """``describe(*args)`` and whether the job takes the lean lane; (None, False) when describing failed (counted,
    the job still runs). Plain try/except rather than ``with _contained`` on the per-job path."""
    try:
        desc = describe(*args)
        # a kept description (``_keep``: without its circuits) is a repeated job's
        return desc, desc.run_input is None and desc.simulator is True and _lean_ok(desc)
    except Exception as exc:  # noqa: BLE001
        report_internal(COMPONENT, exc)
        return None, False


_with_run_options: dict[type, bool] = {}  # primitive type -> whether its options have ``run_options``


def _run_noise(target: Any, kind: str, kwargs: dict[str, Any]) -> Any:
    """The noise model given for this job alone, not the backend's: Aer's ``run(noise_model=...)``, or one in a
    primitive's ``options.run_options`` (``BackendSamplerV2`` and Aer's primitives pass them to the backend's
    run); None when there is none. Never raises; a primitive type whose options have no run options (the
    reference primitives, ``BackendEstimatorV2``) is known after its first job: no failed lookup per job."""
    if kind == "backend_run":
        return kwargs.get("noise_model")
    try:
        cls = type(target)
        has = _with_run_options.get(cls)
        if has is None:
            has = _with_run_options[cls] = hasattr(cls, "options") and hasattr(target.options, "run_options")
        if not has:
            return None
        run_options = target.options.run_options
        return run_options.get("noise_model") if isinstance(run_options, dict) else None
    except Exception:  # noqa: BLE001 - options of another shape, a descriptor that raises
        return None


def _attached(desc: _Desc | None, run_input: Any) -> _Desc | None:
    """``_with_circuits``, contained (None: describing failed, counted; the job still runs)."""
    if desc is None or desc.run_input is not None:
        return desc
    try:
        return _with_circuits(desc, run_input)
    except Exception as exc:  # noqa: BLE001
        report_internal(COMPONENT, exc)
        return None


def _observe(orig: Callable[..., Any], target: Any, kind: str, args: tuple, kwargs: dict[str, Any],
             desc: _Desc | None) -> Any:
    """Submit a job through ``orig`` with telemetry around it (``desc`` None: describing it failed)."""
    if desc is None:
        return _scoped(orig, target, args, kwargs, None)
    decision = _check(desc)
    requested, unsupported = None, False
    if decision is not None:
        with _contained:
            desc = copy.copy(desc)  # a description may be shared by repeated jobs (``_reused``)
            before = desc.backend
            new = _reroute(desc, decision, target, kind)
            if new is None:
                unsupported = True
            else:
                target, requested = new, before
    try:
        handle = _start(desc)
        noise = _run_noise(target, kind, kwargs)
        if noise is not None:
            handle.record.context[CTX_NOISE_MODEL] = noise  # not ideal (``fidelity.noiseless``)
        if decision is not None:
            _fallback_attrs(handle, requested, decision, unsupported)
        tracker = _Tracker(handle, desc)
    except Exception as exc:  # noqa: BLE001
        report_internal(COMPONENT, exc)
        tracker = None
    return _scoped(orig, target, args, kwargs, tracker)


def _scoped(orig: Callable[..., Any], target: Any, args: tuple, kwargs: dict[str, Any],
            tracker: _Tracker | _Lean | None) -> Any:
    """Call the SDK's ``run`` inside the scope (nested calls pass through), then track the job."""
    tls = _tls
    prev = tls.current
    tls.depth += 1
    tls.current = tracker
    try:
        job = orig(target, *args, **kwargs)
    except BaseException as exc:
        with _contained:
            _submission_failed(_as_tracker(tracker) if type(tracker) is _Lean else tracker, exc)
        raise
    finally:
        tls.depth -= 1
        tls.current = prev
    if tracker is not None:
        try:
            if type(tracker) is _Lean:
                _lean_track(job, tracker)
            else:
                _track(job, tracker)
        except Exception as exc:  # noqa: BLE001
            report_internal(COMPONENT, exc)
    return job


def _make_primitive_run(kind: str) -> Callable[[Any], Any]:
    def make(orig: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(orig)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            if _tls.depth:
                return orig(self, *args, **kwargs)
            if args and not isinstance(args[0], (list, tuple)):
                args = (list(args[0]), *args[1:])  # a generator of pubs must survive our look at it
            elif not args and "pubs" in kwargs and not isinstance(kwargs["pubs"], (list, tuple)):
                kwargs["pubs"] = list(kwargs["pubs"])
            if len(args) == 1:
                f = _state.fast.get(id(self))
                if f is not None and f.hit(self, args[0], kwargs):
                    return _lean_run(orig, self, args, kwargs, args[0], f.desc, f.epoch)
            epoch = telemetry.lean_epoch  # before the lane is chosen: a change meanwhile is seen at result()
            pubs = args[0] if args else kwargs.get("pubs", [])
            desc, lean = _described_lane(_describe_primitive, self, kind, pubs, kwargs)
            if lean and _run_noise(self, kind, kwargs) is not None:
                lean = False
            if lean:
                return _lean_run(orig, self, args, kwargs, pubs, desc, epoch, len(args) == 1)
            return _observe(orig, self, kind, args, kwargs, _attached(desc, pubs))

        return run

    return make


def _make_backend_run(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _tls.depth:
            return orig(self, *args, **kwargs)
        if len(args) == 1:
            f = _state.fast.get(id(self))
            if f is not None and f.hit(self, args[0], kwargs):
                return _lean_run(orig, self, args, kwargs, args[0], f.desc, f.epoch)
        epoch = telemetry.lean_epoch  # before the lane is chosen: a change meanwhile is seen at result()
        run_input = args[0] if args else kwargs.get("run_input", kwargs.get("circuits"))
        desc, lean = _described_lane(_describe_backend_run, self, run_input, kwargs)
        if lean and _run_noise(self, "backend_run", kwargs) is not None:
            lean = False
        if lean:
            return _lean_run(orig, self, args, kwargs, run_input, desc, epoch, len(args) == 1)
        desc = _attached(desc, run_input)

        def call(target: Any, *a: Any, **k: Any) -> Any:
            # A fallback backend of another class runs through its own class's run (passes through: nested).
            return orig(target, *a, **k) if target is self else type(target).run(target, *a, **k)

        return _observe(call, self, "backend_run", args, kwargs, desc)

    return run


def _make_submit(orig: Callable[..., Any]) -> Callable[..., Any]:
    """PrimitiveJob._submit: the job's function runs on a worker thread; carry the scope there."""

    @functools.wraps(orig)
    def _submit(self: Any) -> Any:
        if not _tls.depth:
            return orig(self)
        tracker = _tls.current
        fn = self._function

        def scoped(*a: Any, **k: Any) -> Any:
            _tls.depth += 1
            if tracker is not None and tracker.t_run is None:
                tracker.t_run = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _tls.depth -= 1
                if tracker is not None:
                    tracker.t_end = time.perf_counter()

        self._function = scoped
        try:
            return orig(self)
        finally:
            self._function = fn  # the job keeps the SDK's own function (pickling, introspection)

    return _submit


def _track(job: Any, tracker: _Tracker) -> None:
    tracker.job = job
    _ensure_result_hook(type(job))
    _pending[id(job)] = tracker
    fut = getattr(job, "_future", None)
    if isinstance(fut, Future):
        fut.add_done_callback(functools.partial(_on_future_done, tracker))
        return
    if not type(job).__module__.startswith("qiskit_ibm_runtime"):
        status = _final_status(job)
        if status is not None:
            _settle(tracker, status)
            return
    _poller().add(tracker)


def _final_status(job: Any) -> str | None:
    try:
        s = job.status()
    except Exception:  # noqa: BLE001 - a job that cannot tell its status yet
        return None
    name = str(getattr(s, "name", s)).upper()
    return {"DONE": "ok", "ERROR": "error", "CANCELLED": "cancelled", "CANCELED": "cancelled"}.get(name)


def _settle(tracker: _Tracker, status: str) -> None:
    """Record a job whose final status is known but whose result we have not seen (poller, sync jobs)."""
    if not tracker.take():
        return
    job = tracker.job
    if _pending.get(id(job)) is tracker:
        _pending.pop(id(job), None)  # our own result() call below must not wait for ourselves
    try:
        result = exc = None
        if status != "cancelled":
            try:
                result = job.result()
            except Exception as e:  # noqa: BLE001 - the job's failure, recorded as its error type
                exc = e
        _finish(tracker, result=result if exc is None else None, error=exc, cancelled=status == "cancelled",
                failed=status == "error")
    finally:
        _release(tracker)


def _release(tracker: _Tracker) -> None:
    job = tracker.job
    if job is not None and _pending.get(id(job)) is tracker:
        _pending.pop(id(job), None)
    # Break the cycle job -> future -> done-callback -> tracker -> job and let the record and the
    # result go: otherwise every job lives until the cyclic GC runs (or the finisher's grace ends),
    # and the collections that this garbage triggers cost more than everything else qobs does.
    tracker.job = tracker.handle = tracker.desc = tracker.ctx = None
    tracker.set_done()


def _on_future_done(tracker: _Tracker, fut: Future) -> None:
    """The job's future completed. A cancellation is recorded now (``cancel()`` runs this inline); an
    outcome is left to the user's ``result()`` call, and recorded by the finisher thread after a short
    grace when nobody asks: recording here, on the SDK's worker thread, would make the user's
    ``result()`` wait for it (a thread hand-off that costs milliseconds on a busy machine)."""
    tracker.t_done = time.perf_counter()
    if fut.cancelled():
        with _contained:
            _from_future(tracker, fut)
        return
    _finisher().defer(tracker)


def _from_future(tracker: _Tracker, fut: Future) -> None:
    if tracker.gen != _state.generation or not tracker.take():
        return
    try:
        if fut.cancelled():
            _finish(tracker, cancelled=True)
        elif fut.exception() is not None:
            _finish(tracker, error=fut.exception())
        else:
            _finish(tracker, result=fut.result())
    finally:
        _release(tracker)


# --- the lean lane ------------------------------------------------------------------------------
class _Lean:
    """A repeated job of an ideal simulator when ``telemetry.lean_possible()`` (no guard, no span, nothing
    reads its result). The user's thread keeps the job and its clock, and at ``result()`` reads the result's
    few figures into the entry itself (``record``: ``_outcome`` reads into it as into a job record), so that
    the SDK's objects can go at once; the entry is then queued (``telemetry.record_later``) and called on the
    recorder's thread, where it makes the job's record. A job whose ``result()`` is not called within the
    finisher's grace is read from its future there."""

    __slots__ = ("backend", "circuits", "ctx", "desc", "duration_s", "ended", "epoch", "error_type", "execution_s",
                 "gen", "job", "job_id", "queue_s", "run_input", "session_id", "shots", "status", "t0", "t_done",
                 "t_end", "t_run")

    def __init__(self, desc: _Desc, t0: float, epoch: int, run_input: Any) -> None:
        self.desc, self.t0 = desc, t0
        self.run_input = run_input  # its circuits, until recorded (the full way needs them: ``_with_circuits``)
        self.backend = backend_of(desc)  # its backend, until recorded (a kept description holds it weakly)
        self.epoch = epoch  # ``telemetry.lean_epoch`` as the lane was chosen: if it moved, ``results_kept`` is asked
        self.job: Any = None
        self.gen = _state.generation
        self.t_run: float | None = None   # the job's function ran from here (PrimitiveJob, ``_make_submit``)
        self.t_end: float | None = None   # to here
        self.t_done: float | None = None  # its future completed
        self.ended: float | None = None   # the end recorded (``_lean_submit``)
        self.ctx: Any = contextvars.copy_context()
        self.circuits = desc.circuits
        self.status, self.error_type = "ok", None
        self.shots: int | None = None
        self.execution_s = self.queue_s = self.duration_s = None
        self.job_id = self.session_id = None

    @property
    def record(self) -> _Lean:  # ``_outcome`` reads into ``handle.record``
        return self

    def done(self, fut: Future) -> None:
        """The job's future completed (on the SDK's thread): a cancellation is recorded now, the rest is left
        to ``result()`` or, after its grace, the finisher's scan of ``_lean``."""
        self.t_done = time.perf_counter()
        if fut.cancelled():
            with _contained:
                _lean_late(self)

    def __call__(self) -> JobHandle:
        """On the recorder's thread: the job's record, as ``_start`` and ``_outcome`` would have made it."""
        desc, ctx, backend = self.desc, self.ctx, self.backend
        # the entry lives on in the future's done-callbacks while the user keeps the job
        self.desc = self.ctx = self.backend = None
        rec = JobRecord(operation=desc.operation, backend=desc.backend, provider=desc.provider, circuits=self.circuits,
                        bindings=desc.bindings, shots_requested=desc.shots_req, precision=desc.precision,
                        simulator=desc.simulator, session_id=self.session_id or desc.session_id,
                        model=ctx.get(CURRENT_MODEL), started_at=time.time() - (time.perf_counter() - self.t0),
                        status=self.status, error_type=self.error_type, shots=self.shots,
                        execution_s=self.execution_s, queue_s=self.queue_s, duration_s=self.duration_s,
                        job_id=self.job_id)
        rec.context[CTX_BACKEND] = backend
        _shapes(desc, rec)
        h = JobHandle(rec, None, self.t0)
        h.t_end = self.ended
        return h


class _Fast:
    """A lean job's submission, remembered so that the next identical one skips describing the job and choosing
    its lane: the same target, the same run input objects (of the same lengths), equal keyword arguments, and
    what chose the lane unchanged (``telemetry.lean_epoch``, the tracer provider, the simulator's noise model
    and default shots, read from its options). Only a job that took the lean lane is remembered."""

    __slots__ = ("desc", "epoch", "fields", "items", "kind", "kwargs", "kwtypes", "lengths", "one", "opts",
                 "provider", "shots", "target", "trace", "watched")

    def hit(self, target: Any, run_input: Any, kwargs: dict[str, Any]) -> bool:
        """Whether a job of ``target`` with ``run_input`` and ``kwargs`` is this one again. Never raises: a user's
        keyword argument whose ``==`` raises, or any other surprise, is a miss."""
        try:
            if target is not self.target() or self.epoch != telemetry.lean_epoch or kwargs != self.kwargs \
                    or self.trace._TRACER_PROVIDER is not self.provider \
                    or tuple(map(type, kwargs.values())) != self.kwtypes:  # shots=1 is not shots=True, nor numpy's
                return False
            if self.one:
                if run_input is not self.items() or len(run_input) != self.lengths:
                    return False
            elif type(run_input) is not list or len(run_input) != len(self.items):
                return False
            else:
                for a, b, n in zip(run_input, self.items, self.lengths, strict=True):
                    if a is not b() or len(a) != n:
                        return False
            if self.kind is not None and _run_noise(target, self.kind, kwargs) is not None:
                return False  # a primitive given a noise model in its run options since
            fields = self.fields
            return fields is None or (self.watched()._options is self.opts and fields.get("noise_model", False) is None
                                      and (self.shots is _UNSET or fields.get("shots") == self.shots))
        except Exception:  # noqa: BLE001
            return False


_UNSET: Any = object()
_FAST_MAX = 64  # targets remembered
_SIMPLE = (int, float, str, bool, type(None))


def _remember(target: Any, run_input: Any, kwargs: dict[str, Any], desc: _Desc, epoch: int) -> None:
    """Remember a lean job's submission for ``_Fast.hit`` (when every part of it can be watched cheaply). What
    the memo compares with is what the lane was chosen on, not what holds now: ``epoch`` read before the
    choice (nothing is remembered if it moved since), the lengths and shots ``desc`` was made for, and a
    tracer provider slot that allows no span."""
    if epoch != telemetry.lean_epoch:
        return
    provider = telemetry.untraced_slot()
    if provider is telemetry.TRACED:
        return
    for v in kwargs.values():
        if type(v) not in _SIMPLE:
            return
    QuantumCircuit = _qc_type()
    lengths = desc.lengths
    if lengths is None:
        return
    f = _Fast()
    if type(run_input) is QuantumCircuit and len(lengths) == 1:  # held weakly, as the descriptions hold them
        f.one, f.items, f.lengths = True, weakref.ref(run_input), lengths[0]
    elif type(run_input) is list and run_input and all(type(c) is QuantumCircuit for c in run_input) \
            and len(lengths) == len(run_input):
        f.one, f.items, f.lengths = False, [weakref.ref(c) for c in run_input], lengths
    else:
        return
    f.target, f.desc, f.epoch = weakref.ref(target), desc, epoch  # the target, like the circuits, held weakly
    f.kwargs, f.kwtypes = dict(kwargs), tuple(map(type, kwargs.values()))
    f.trace, f.provider = _otel_trace(), provider
    f.kind = None if desc.operation == "backend_run" else desc.operation  # a primitive's run options: read per hit
    f.fields = f.opts = f.watched = None
    f.shots = _UNSET
    backend = backend_of(desc)
    default_shots = kwargs.get("shots") is None
    if default_shots and desc.operation != "backend_run":
        return  # a primitive's default shots live in places of its own: not watched
    if desc.provider == "qiskit":  # the reference primitives, BasicSimulator: noiseless by type
        if default_shots:
            return  # its default shots would go unwatched
    else:  # Aer: a noise model set on its options since would make it noisy
        opts = getattr(backend, "_options", None)
        fields = getattr(opts, "_fields", None)
        if type(fields) is not dict or getattr(backend, "options", None) is not opts:
            return
        f.watched, f.opts, f.fields = weakref.ref(backend), opts, fields
        if default_shots:
            f.shots = desc.shots_req  # the shots it was described with: its options must still say so
    with _state.lock:
        if len(_state.fast) >= _FAST_MAX:
            _state.fast.clear()
        _state.fast[id(target)] = f


def _lean_ok(desc: _Desc) -> bool:
    """Whether a job of ``desc``, a description seen before (its shapes are known) of a simulator, takes the
    lean lane: an ideal simulator, and nothing wants more than the lean lane records."""
    global _noiseless_fn
    if _noiseless_fn is None:
        from qobs.fidelity import noiseless

        _noiseless_fn = noiseless
    return telemetry.lean_possible() and _noiseless_fn(desc.simulator, desc.provider, backend_of(desc))


_noiseless_fn: Callable[[bool | None, str, Any], bool] | None = None


def _lean_run(orig: Callable[..., Any], target: Any, args: tuple, kwargs: dict[str, Any], run_input: Any,
              desc: _Desc, epoch: int, remember: bool = False) -> Any:
    """Submit a lean job; with ``remember``, remember its submission (``_Fast``) if it took the lean lane."""
    entry = _Lean(desc, time.perf_counter(), epoch, run_input)
    job = _scoped(orig, target, args, kwargs, entry)
    if remember and entry.job is job:
        with _contained:
            _remember(target, args[0], kwargs, desc, epoch)
    return job


def _lean_track(job: Any, entry: _Lean) -> None:
    """Track a lean job (``entry.job``), or a job without a future to watch or whose reading may block on the
    usual path."""
    fut = getattr(job, "_future", None)
    if isinstance(fut, Future) and _lean_type(type(job)):
        entry.job = job
        _lean_add(job, entry)
        fut.add_done_callback(entry.done)
        return
    tracker = _as_tracker(entry)
    tracker.t_run, tracker.t_end = entry.t_run, entry.t_end
    _track(job, tracker)


def _lean_add(job: Any, entry: _Lean) -> None:
    """Put a lean job in ``_lean``, where the finisher's scan finds it if its result() is not called: every
    addition goes through here, so that a sleeping finisher wakes up for it."""
    _lean[id(job)] = entry
    if _the_finisher is not None and _the_finisher.sleeping:
        _the_finisher.wake()


_lean_types: dict[type, bool] = {}


def _lean_type(cls: type) -> bool:
    """Whether jobs of ``cls`` can take the lean lane: reading them cannot block (``_may_block``). Their
    ``result()`` is hooked on the first one."""
    ok = _lean_types.get(cls)
    if ok is None:
        ok = not _may_block(cls)
        if ok:
            _ensure_result_hook(cls)
            _finisher()  # its scan records the jobs whose result() is not called
        _lean_types[cls] = ok
    return ok


def _as_tracker(entry: _Lean) -> _Tracker:
    """A lean entry's job on the usual path, as if it had been started there."""
    desc = _with_circuits(entry.desc, entry.run_input)
    h = _start(desc)
    h.record.started_at -= h.t0 - entry.t0  # it started when the lean entry was made
    h.t0 = entry.t0
    tracker = _Tracker(h, desc)
    tracker.ctx = entry.ctx
    return tracker


def _lean_result(orig: Callable[..., Any], job: Any, entry: _Lean, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``job.result()`` of a lean job (taken off ``_lean`` by the caller: nobody else will record it)."""
    try:
        out = orig(job, *args, **kwargs)
    except BaseException:
        with _contained:
            fut = job._future
            if entry.gen != _state.generation:
                pass  # uninstrumented meanwhile: not this run's job
            elif fut.done():
                _lean_settle(entry, fut)
            else:  # a timeout (or Ctrl-C) while it runs: the job goes on
                _lean_add(job, entry)
        raise
    if entry.gen != _state.generation:
        return out
    if entry.epoch != telemetry.lean_epoch and telemetry.results_kept():
        with _contained:  # opt-in recording turned on since the job was submitted: the full way
            _full_from_lean(entry, job, out)
        return out
    try:
        if entry.desc.operation == "backend_run":
            _read_backend_result(entry, entry.desc, out, False)
        else:
            _read_primitive_result(entry, entry.desc, out, False)
        _read_job(entry, job, entry.t_run, entry.t_end)
    except Exception as exc:  # noqa: BLE001 - the figures read so far are recorded
        report_internal(COMPONENT, exc)
    try:
        _lean_submit(entry)
    except Exception as exc:  # noqa: BLE001
        report_internal(COMPONENT, exc)
    return out


def _full_from_lean(entry: _Lean, job: Any, out: Any) -> None:
    """Record a lean job the full way (``hand_over``), its result kept for whoever wants it."""
    tracker = _as_tracker(entry)
    tracker.job = job
    tracker.t_run, tracker.t_end, tracker.t_done = entry.t_run, entry.t_end, entry.t_done
    entry.job = None
    if tracker.take():
        try:
            _finish(tracker, result=out)
        finally:
            _release(tracker)


def _lean_late(entry: _Lean) -> None:
    """Record a lean job from its future (cancelled, or its result() not called), unless someone has."""
    job = entry.job
    if job is None or entry.gen != _state.generation or _lean.pop(id(job), None) is not entry:
        return
    _lean_settle(entry, job._future)


def _lean_settle(entry: _Lean, fut: Future) -> None:
    """Record a lean job from its completed future (taken off ``_lean`` by the caller)."""
    cancelled = fut.cancelled()
    error = None if cancelled else fut.exception()
    result = None if cancelled or error is not None else fut.result()
    if result is not None and telemetry.results_kept():
        _full_from_lean(entry, entry.job, result)
        return
    _outcome(entry.desc, entry.job, entry.t_run, entry.t_end, result, error, cancelled, False, entry, False)
    _lean_submit(entry)


def _lean_submit(entry: _Lean) -> None:
    """Queue the entry, its figures read, to be recorded (``_Lean.__call__``); the job (its future, its result)
    goes now."""
    end = entry.t_done if entry.t_done is not None else entry.t_end
    entry.ended = end if end is not None else time.perf_counter()
    entry.job = entry.run_input = None
    telemetry.record_later(entry, entry.ctx)


class _Finisher:
    """Records completed jobs whose ``result()`` was not called within ``GRACE_S``. After ``IDLE_AFTER`` rounds
    with no job to look after it sleeps until one is deferred or a lean job is submitted (``wake``): a loop of
    jobs whose result() is called at once leaves it nothing to look after at most rounds, and waking it for
    each would cost more switches than its rounds do."""

    # Each round wakes a thread that must take the GIL from the SDK's busy threads, several context switches
    # (about 9 a round measured with a 100-binding SamplerV2 job): rounds are kept few. A job whose result()
    # is never called is recorded within one to two rounds of its end.
    GRACE_S = 0.5
    IDLE_AFTER = 2  # rounds (a second) with nothing to look after before it sleeps

    def __init__(self) -> None:
        self._q: deque[_Tracker] = deque()
        self._wake = threading.Event()
        self._lock = threading.RLock()  # one round at a time: its own, a reader's (``settle``), the exit's
        self.sleeping = False
        self._thread = threading.Thread(target=self._loop, name="qobs-qiskit-finisher", daemon=True)
        self._thread.start()

    def defer(self, tracker: _Tracker) -> None:
        self._q.append(tracker)
        if self.sleeping:
            self.wake()

    def wake(self) -> None:
        self.sleeping = False
        self._wake.set()

    def has_work(self) -> bool:
        """Jobs to look after: deferred ones, or lean ones whose result() may never come."""
        return bool(self._q or _lean)

    def _loop(self) -> None:
        empty = 0
        while True:
            if empty >= self.IDLE_AFTER:
                self.sleeping = True
                if not self.has_work():  # a job added before the flag was up finds the thread awake
                    self._wake.wait()
                self.sleeping = False
                empty = 0
            self._wake.clear()
            time.sleep(self.GRACE_S)
            empty = 0 if self.has_work() else empty + 1
            self.run_due(time.perf_counter() - self.GRACE_S)

    def run_due(self, before: float) -> None:
        with self._lock:
            self._run_due(before)

    def _run_due(self, before: float) -> None:
        if _lean:  # lean jobs whose future completed before ``before`` and whose result() nobody called
            for e in list(_lean.values()):
                if e.t_done is not None and e.t_done <= before:
                    with _contained:
                        _lean_late(e)
        q = self._q
        while q and (q[0].t_done or 0.0) <= before:
            t = q.popleft()
            if not t.is_done():
                with _contained:
                    fut = getattr(t.job, "_future", None)
                    if isinstance(fut, Future):
                        _from_future(t, fut)


_the_finisher: _Finisher | None = None
_finisher_lock = threading.Lock()


def _finisher() -> _Finisher:
    global _the_finisher
    if _the_finisher is None:
        with _finisher_lock:
            if _the_finisher is None:
                _the_finisher = _Finisher()
                runtime.add_exit_callback(lambda: _the_finisher.run_due(float("inf")))  # before its drain
                telemetry.add_settler(_settle_ended)
    return _the_finisher


def _settle_ended() -> None:
    """A reader drains the recorder (``telemetry.drain``): jobs that have ended but wait out the finisher's
    grace for their result() are recorded now, so that it sees them (a ``block`` budget counts them)."""
    f = _the_finisher
    if f is not None and f.has_work():
        f.run_due(time.perf_counter())


def _ensure_result_hook(cls: type) -> None:
    if cls in _state.result_types or _state.patcher is None:
        return
    with _state.lock:
        if cls not in _state.result_types:
            _state.result_types.add(cls)
            if callable(getattr(cls, "result", None)):
                _state.patcher.wrap(cls, "result", _make_result)


def _make_result(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def result(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _lean:
            entry = _lean.pop(id(self), None)
            if entry is not None:
                return _lean_result(orig, self, entry, args, kwargs)
        tracker = _pending.get(id(self)) if _pending else None
        if tracker is None or tracker.job is not self:
            return orig(self, *args, **kwargs)
        try:
            out = orig(self, *args, **kwargs)
        except BaseException as exc:
            with _contained:
                _after_result(tracker, None, exc)
            raise
        try:
            _after_result(tracker, out, None)
        except Exception as exc:  # noqa: BLE001
            report_internal(COMPONENT, exc)
        return out

    return result


def _after_result(tracker: _Tracker, out: Any, exc: BaseException | None) -> None:
    if tracker.gen != _state.generation:
        return
    if exc is not None:
        fut = getattr(tracker.job, "_future", None)
        if isinstance(fut, Future):
            if fut.done():
                _from_future(tracker, fut)
                tracker.wait_done(_RESULT_WAIT_S)  # if the finisher got there first
            return
        status = _final_status(tracker.job)
        if status is None:
            return  # a timeout or a transient failure: the job goes on
        if tracker.take():
            try:
                _finish(tracker, error=exc, cancelled=status == "cancelled")
            finally:
                _release(tracker)
        return
    if tracker.take():
        try:
            _finish(tracker, result=out, error=exc)
        finally:
            _release(tracker)
    else:
        tracker.wait_done(_RESULT_WAIT_S)


# --- reading outcomes --------------------------------------------------------------------------
def _finish(tracker: _Tracker, *, result: Any = None, error: BaseException | None = None,
            cancelled: bool = False, failed: bool = False) -> None:
    """Hand the job over to be recorded (``telemetry.hand_over``; an IBM job's ``metrics()`` may be a
    request to the service, so it is read on the recorder's thread)."""
    h = tracker.handle
    end = tracker.t_done if tracker.t_done is not None else tracker.t_end
    h.t_end = end if end is not None else time.perf_counter()
    job = tracker.job
    telemetry.hand_over(h, functools.partial(
        _outcome, tracker.desc, job, tracker.t_run, tracker.t_end, result, error, cancelled, failed),
        tracker.ctx, may_block=job is not None and _may_block(type(job)))


_blocking_types: dict[type, bool] = {}


def _may_block(cls: type) -> bool:
    """Whether reading a job of ``cls`` may wait on the network: it has ``metrics()`` (IBM runtime style)."""
    hit = _blocking_types.get(cls)
    if hit is None:
        hit = _blocking_types[cls] = callable(getattr(cls, "metrics", None))
    return hit


def _outcome(desc: _Desc, job: Any, t_run: float | None, t_end: float | None, result: Any,
             error: BaseException | None, cancelled: bool, failed: bool, h: JobHandle | _Lean, keep: bool) -> None:
    """Read a job's outcome into its record (``h.record``: a ``JobRecord``, or a lean job's entry); with
    ``keep``, the result, counts and circuits too, for listeners."""
    rec = h.record
    if cancelled or isinstance(error, CancelledError):
        rec.status = "cancelled"
    elif error is not None or failed:
        rec.status, rec.error_type = "error", type(error).__name__ if error is not None else "JobError"
    else:
        try:
            if keep:
                rec.context[CTX_RESULT] = result
            if desc.operation == "backend_run":
                _read_backend_result(rec, desc, result, keep)
            else:
                _read_primitive_result(rec, desc, result, keep)
        except Exception as exc:  # noqa: BLE001 - the job's figures that were read stay
            report_internal(COMPONENT, exc)
    try:
        _read_job(rec, job, t_run, t_end)
    except Exception as exc:  # noqa: BLE001
        report_internal(COMPONENT, exc)


def _read_job(rec: Any, job: Any, t_run: float | None, t_end: float | None) -> None:
    jid = getattr(job, "job_id", None)
    jid = jid() if callable(jid) else jid
    rec.job_id = str(jid) if jid else None
    sid = getattr(job, "session_id", None)
    if isinstance(sid, str) and sid:
        rec.session_id = sid
    measured = t_end - t_run if t_run is not None and t_end is not None else None
    metrics_fn = getattr(job, "metrics", None)
    if callable(metrics_fn):  # IBM runtime style (and simulated QPUs that mimic it)
        m = metrics_fn()
        rec.context[CTX_METRICS] = m
        ts = (m or {}).get("timestamps") or {}
        created, running, finished = (_ts(ts.get(k)) for k in ("created", "running", "finished"))
        if created is not None and running is not None:
            rec.queue_s = max(running - created, 0.0)
        if running is not None and finished is not None and finished > running:
            rec.execution_s = finished - running
        if created is not None and finished is not None and t_end is None and finished > created:
            rec.duration_s = finished - created
    if rec.execution_s is None and measured is not None:
        rec.execution_s = measured


def _ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class LazySeq(list):
    """A read-only list whose items are computed on first access (counts, bound circuits).

    A ``list`` subclass so that listeners testing ``isinstance(x, (list, tuple))`` accept it;
    indexing, ``len``, truth and iteration work, other list operations see an empty list.
    """

    def __init__(self, n: int, fn: Callable[[int], Any]) -> None:
        super().__init__()
        self._n, self._fn, self._cache = n, fn, {}

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        if i not in self._cache:
            self._cache[i] = self._fn(i)
        return self._cache[i]

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self._n))

    def __repr__(self) -> str:
        return f"LazySeq({self._n})"

    __hash__ = None  # type: ignore[assignment]


def _read_backend_result(rec: Any, desc: _Desc, result: Any, keep: bool = True) -> None:
    exps = getattr(result, "results", None) or ()
    if not isinstance(exps, (list, tuple)):
        exps = list(exps)
    shots = failed = 0
    for e in exps:  # one pass: this runs for every job, most of them on the user's thread
        if getattr(e, "success", True):
            n = getattr(e, "shots", None)
            if isinstance(n, int):
                shots += int(n)
        else:
            failed += 1
    rec.shots = shots
    if (exps and failed == len(exps)) or getattr(result, "success", True) is False:
        rec.status, rec.error_type = "error", "ExperimentError"
    md = getattr(result, "metadata", None)
    t = md.get("time_taken_execute") if isinstance(md, dict) else None
    if t is None:
        try:
            t = result.time_taken
        except AttributeError:
            t = None
    if isinstance(t, (int, float)):
        rec.execution_s = float(t)
    rec.circuits = len(exps) or rec.circuits
    if keep:
        rec.context[CTX_CIRCUITS] = desc.run_input
        rec.context[CTX_COUNTS] = LazySeq(len(exps), lambda i: _counts_or_none(result, i))


def _counts_or_none(result: Any, i: int) -> dict[str, int] | None:
    try:
        return dict(result.get_counts(i))
    except Exception:  # noqa: BLE001 - an experiment without counts
        return None


def _read_primitive_result(rec: Any, desc: _Desc, result: Any, keep: bool = True) -> None:
    # the pubs are read for an estimator's bindings, and for a sampler's circuits when they are kept
    pubs = [p for p in desc.pubs if p is not None] if desc.operation != "sampler" or keep else []
    index: list[tuple[int, tuple[int, ...]]] = []
    shots = 0
    shots_known = True
    exec_s: float | None = None
    for i, pr in enumerate(result):
        md = getattr(pr, "metadata", None) or {}
        shape = tuple(getattr(pr.data, "shape", ()) or ())
        size = math.prod(shape) if shape else 1
        if desc.operation == "sampler":
            per = md.get("shots")
            if per is None:
                per = _bitarray_shots(pr.data)
            if per is None:
                shots_known = False
            else:
                shots += int(per) * size
            if keep:
                index.extend((i, idx) for idx in _ndindex(*shape)) if shape else index.append((i, ()))
        else:
            n = max(int(pubs[i].parameter_values.size), 1) if i < len(pubs) else 1
            per = md.get("shots")
            if per is not None:
                shots += int(per) * n
            elif md.get("target_precision") == 0 or (desc.provider == "qiskit" and desc.backend == "statevector"):
                pass  # evaluated exactly: no shots
            else:
                shots_known = False
        sim = md.get("simulator_metadata")
        if isinstance(sim, dict) and isinstance(sim.get("time_taken_execute"), (int, float)):
            exec_s = max(exec_s or 0.0, float(sim["time_taken_execute"]))
    rec.shots = shots if shots_known else None
    if exec_s is not None:
        rec.execution_s = exec_s
    if keep and desc.operation == "sampler":
        rec.context[CTX_COUNTS] = LazySeq(len(index), lambda k: _pub_counts(result, index[k]))
        rec.context[CTX_CIRCUITS] = LazySeq(len(index), lambda k: _bound_circuit(pubs, index[k]))


def _ndindex(*shape: int) -> Iterator[tuple[int, ...]]:
    """``numpy.ndindex`` (C order, tuples of ints) without importing numpy per job."""
    return itertools.product(*(range(n) for n in shape))


def _bitarray_shots(data: Any) -> int | None:
    for value in getattr(data, "values", lambda: [])():
        n = getattr(value, "num_shots", None)
        if isinstance(n, int):
            return n
    return None


def _pub_counts(result: Any, where: tuple[int, tuple[int, ...]]) -> dict[str, int] | None:
    i, idx = where
    try:
        joined = result[i].join_data()
        return dict(joined.get_counts(loc=idx) if idx else joined.get_counts())
    except Exception:  # noqa: BLE001
        return None


def _bound_circuit(pubs: list[Any], where: tuple[int, tuple[int, ...]]) -> Any:
    i, idx = where
    pub = pubs[i]
    if pub.circuit.num_parameters == 0:
        return pub.circuit
    return pub.parameter_values.bind(pub.circuit, idx if idx else ())


# --- polling finisher (jobs without a future: IBM runtime service jobs, others) ----------------
class _Poller:
    """Finishes jobs that have no future to hook: polls ``status()`` with a per-job backoff
    (local jobs from 20 ms up to 2 s; IBM runtime jobs, one request per poll, from 1 s up to 30 s)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, float, _Tracker]] = []
        self._cond = threading.Condition()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, tracker: _Tracker) -> None:
        remote = type(tracker.job).__module__.startswith("qiskit_ibm_runtime")
        first = 1.0 if remote else 0.02
        with self._cond:
            self._push(time.monotonic() + first, first, tracker)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="qobs-qiskit-jobs", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _push(self, at: float, interval: float, tracker: _Tracker) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, interval, tracker))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, interval, t = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            with _contained:
                if t.gen != _state.generation or t.is_done():
                    continue
                status = _final_status(t.job)
                if status is not None:
                    _settle(t, status)
                    continue
                cap = 30.0 if type(t.job).__module__.startswith("qiskit_ibm_runtime") else 2.0
                interval = min(interval * 1.5, cap)
                with self._cond:
                    self._push(time.monotonic() + interval, interval, t)

    def drain(self) -> None:
        """At exit: record the local jobs that ended but were never polled since (no network calls)."""
        with self._cond:
            items = [e[3] for e in self._heap]
        for t in items:
            with _contained:
                if t.gen == _state.generation and not t.is_done() and \
                        not type(t.job).__module__.startswith("qiskit_ibm_runtime"):
                    status = _final_status(t.job)
                    if status is not None:
                        _settle(t, status)


_the_poller: _Poller | None = None


def _poller() -> _Poller:
    global _the_poller
    if _the_poller is None:
        _the_poller = _Poller()
        runtime.add_exit_callback(_the_poller.drain)  # before the runtime's exit drain
    return _the_poller


def _forked_child() -> None:
    """A forked child has none of its parent's threads: it makes its own finisher and poller (with exit
    callbacks of its own) when it tracks jobs, instead of queueing them where no thread will look."""
    global _the_finisher, _the_poller, _finisher_lock
    _the_finisher = _the_poller = None
    _finisher_lock = threading.Lock()
    _lean_types.clear()  # so that the child's first lean job starts the child's finisher
    _lean.clear()  # the parent's jobs: the parent records them (the child's finisher would record them again)
    _forksafe.renew_attr(_state, "lock")  # a poller's or finisher's hand-over may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked_child)


# --- transpilation -----------------------------------------------------------------------------
def _make_transpile(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def transpile(circuits: Any, *args: Any, **kwargs: Any) -> Any:
        if _tls.depth:
            return orig(circuits, *args, **kwargs)
        backend = kwargs.get("backend", args[0] if args else None)
        return _timed_transpile(orig, (circuits, *args), kwargs, circuits, backend)

    return transpile


def _make_passmanager_run(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Only compilation pipelines: qiskit runs small PassManagers internally (gate.control, ...).
        if _tls.depth or not (isinstance(self, _staged()) or hasattr(self, "_qobs_backend")):
            return orig(self, *args, **kwargs)
        circuits = args[0] if args else kwargs.get("circuits", kwargs.get("in_programs"))
        return _timed_transpile(orig, (self, *args), kwargs, circuits, getattr(self, "_qobs_backend", None))

    return run


@functools.cache
def _staged() -> type:
    from qiskit.transpiler import StagedPassManager

    return StagedPassManager


def _make_generate_pm(orig: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(orig)
    def generate_preset_pass_manager(*args: Any, **kwargs: Any) -> Any:
        pm = orig(*args, **kwargs)
        with _contained:
            backend = kwargs.get("backend")
            if backend is None and len(args) > 1 and hasattr(args[1], "run"):
                backend = args[1]
            if backend is not None:
                pm._qobs_backend = _backend_name(backend)
        return pm

    return generate_preset_pass_manager


def _timed_transpile(orig: Callable[..., Any], args: tuple, kwargs: dict[str, Any], circuits: Any,
                     backend: Any) -> Any:
    t0, t0_ns = time.perf_counter(), time.time_ns()
    _tls.depth += 1
    try:
        out = orig(*args, **kwargs)
    finally:
        _tls.depth -= 1
    dt = time.perf_counter() - t0
    with _contained:
        _record_transpile(circuits, out, dt, backend, t0_ns)
    return out


def _record_transpile(circuits: Any, out: Any, dt: float, backend: Any, t0_ns: int) -> None:
    QuantumCircuit = _qc_type()
    ins = [circuits] if isinstance(circuits, QuantumCircuit) else list(circuits or [])
    outs = [out] if isinstance(out, QuantumCircuit) else list(out) if isinstance(out, list) else []
    if not outs or not all(isinstance(c, QuantumCircuit) for c in ins + outs) or len(ins) != len(outs):
        return
    name = backend if isinstance(backend, str) else _backend_name(backend) if backend is not None else "none"
    from qobs.metrics import instruments

    instruments()["qobs_transpile_duration_seconds"].child(name).observe(dt)
    share = dt / len(outs)
    before = [stats_of(c) for c in ins]
    with _state.lock:
        for c, b in zip(outs, before, strict=True):
            _state.transpiled[id(c)] = (weakref.ref(c), b.depth, b.two_qubit_gates, share)
        while len(_state.transpiled) > _IDENT_MAX:
            _state.transpiled.pop(next(iter(_state.transpiled)))
    after = [stats_of(c) for c in outs]
    tracer = telemetry.tracer()
    span = tracer.start_span(Span.TRANSPILE, context=telemetry.default_parent(), start_time=t0_ns, attributes={
        Attr.OPERATION: "transpile", Attr.BACKEND: name, Attr.CIRCUITS: len(outs),
        Attr.DEPTH_BEFORE: max(s.depth for s in before), Attr.DEPTH: max(s.depth for s in after),
        TWO_Q_BEFORE: max(s.two_qubit_gates for s in before),
        Attr.TWO_QUBIT_GATES: max(s.two_qubit_gates for s in after),
        Attr.WIDTH: max(s.width for s in after), Attr.TRANSPILE_S: dt})
    span.end(end_time=t0_ns + int(dt * 1e9))
