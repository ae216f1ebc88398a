"""The PennyLane patches (imported only once PennyLane is). See the package docstring for the rules."""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from pennylane.measurements import CountsMP
from pennylane.tape import QuantumScript

from qobs import telemetry
from qobs.contract import Attr
from qobs.errors import contained, report_internal
from qobs.telemetry import CTX_BACKEND, CTX_CIRCUITS, CTX_COUNTS, CTX_RESULT, SubmissionRefused, SubmitRequest
from qobs_pennylane import _stats

COMPONENT = "adapter:pennylane"
OPERATION = "device_execute"
PROVIDER = "pennylane"
DERIVATIVE_METHODS = ("compute_derivatives", "execute_and_compute_derivatives", "compute_vjp",
                      "execute_and_compute_vjp", "compute_jvp", "execute_and_compute_jvp")
DEVICE_METHODS = ("execute", *DERIVATIVE_METHODS)
JPC_METHODS = ("compute_vjp", "compute_jacobian", "execute_and_compute_jvp", "execute_and_compute_jacobian",
               "execute_and_cache_jacobian")
SIMULATOR_PREFIXES = ("default.", "lightning.", "reference.", "null.")

# True while an observed device method runs: nested device calls are not observed again.
_inside: ContextVar[bool] = ContextVar("qobs_pennylane_inside", default=False)
# "gradient" while a gradient computation (VJP/JVP/Jacobian, gradient transform) runs.
_scope: ContextVar[str] = ContextVar("qobs_pennylane_scope", default="forward")


class _State:
    def __init__(self) -> None:
        self.active = False
        self.patcher: Any = None
        self.device_base: type | None = None
        self.seen: set[type] = set()
        self.gradient_fns: frozenset[Any] = frozenset()
        self.lock = threading.RLock()


_state = _State()


def install(pl: ModuleType, patcher: Any) -> None:
    """Patch PennyLane (the ``pennylane`` module was just imported, or already was)."""
    from pennylane.devices import Device

    _state.patcher = patcher
    _state.device_base = Device
    _state.gradient_fns = _gradient_functions()
    _state.active = True
    for cls in _subclasses(Device):
        with contained(COMPONENT):
            _patch_class(cls)
    # Classes defined later (plugins load on qml.device): patch them when their first instance is made.
    with contained(COMPONENT):
        patcher.wrap(Device, "__init__", _make_init)
    with contained(COMPONENT):
        ctor = sys.modules.get("pennylane.devices.device_constructor")
        for owner in (pl, getattr(pl, "devices", None), ctor):
            if owner is not None and callable(getattr(owner, "device", None)):
                patcher.wrap(owner, "device", _make_device_ctor)
    with contained(COMPONENT):
        from pennylane.workflow import jacobian_products as jp

        for cls in _subclasses(jp.JacobianProductCalculator):
            for name in JPC_METHODS:
                fn = cls.__dict__.get(name)
                if fn is not None and not getattr(fn, "__isabstractmethod__", False):
                    patcher.wrap(cls, name, _make_gradient_scope)
    with contained(COMPONENT):
        for mod_name in ("pennylane", "pennylane.workflow", "pennylane.workflow.execution",
                         "pennylane.workflow.qnode"):
            mod = sys.modules.get(mod_name)
            if mod is not None and callable(mod.__dict__.get("execute")):
                patcher.wrap(mod, "execute", _make_qml_execute)


def reset() -> None:
    """Forget state and caches (the patcher restores the patches)."""
    _state.active = False
    _state.patcher = None
    _state.seen = set()
    _stats.clear()


# --- class patching -------------------------------------------------------------------------------

def _subclasses(root: type) -> Iterator[type]:
    todo, seen = [root], set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        todo.extend(cls.__subclasses__())


def _patch_class(cls: type) -> None:
    with _state.lock:
        if cls in _state.seen or _state.patcher is None:
            return
        _state.seen.add(cls)
        for name in DEVICE_METHODS:
            fn = cls.__dict__.get(name)
            if fn is None or not callable(fn) or getattr(fn, "__isabstractmethod__", False):
                continue
            _state.patcher.wrap(cls, name, functools.partial(_make_device_method, name))


def _ensure_patched(cls: type) -> None:
    if cls in _state.seen or not _state.active:
        return
    base = _state.device_base
    with contained(COMPONENT):
        for c in cls.__mro__:
            if base is not None and isinstance(c, type) and issubclass(c, base) and c not in _state.seen:
                _patch_class(c)


def _make_init(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if _state.active and type(self) not in _state.seen:
            _ensure_patched(type(self))

    return __init__


def _make_device_ctor(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def device(*args: Any, **kwargs: Any) -> Any:
        dev = original(*args, **kwargs)
        if _state.active and type(dev) not in _state.seen:
            _ensure_patched(type(dev))
        return dev

    return device


# --- gradient scope ------------------------------------------------------------------------------

def _gradient_functions() -> frozenset[Any]:
    """The tape functions of every transform in ``qml.gradients`` (0.45: tape_transform, 0.41: transform)."""
    fns = set()
    with contained(COMPONENT):
        import pennylane.gradients as grads

        for obj in vars(grads).values():
            if type(obj).__name__ not in ("Transform", "TransformDispatcher"):
                continue
            fn = getattr(obj, "tape_transform", None) or getattr(obj, "transform", None)
            if fn is not None:
                fns.add(fn)
    return frozenset(fns)


def _make_gradient_scope(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def scoped(*args: Any, **kwargs: Any) -> Any:
        if not _state.active:
            return original(*args, **kwargs)
        token = _scope.set("gradient")
        try:
            return original(*args, **kwargs)
        finally:
            _scope.reset(token)

    return scoped


def _has_gradient_transform(program: Any) -> bool:
    if not program:
        return False
    fns = _state.gradient_fns
    for bound in program:
        fn = getattr(bound, "tape_transform", None)
        if fn is None:
            fn = getattr(bound, "transform", None)
        if fn in fns:
            return True
    return False


def _make_qml_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute(*args: Any, **kwargs: Any) -> Any:
        gradient = False
        if _state.active and _scope.get() != "gradient":
            try:
                gradient = _has_gradient_transform(kwargs.get("transform_program"))
            except Exception as exc:  # noqa: BLE001
                report_internal(COMPONENT, exc)
        if not gradient:
            return original(*args, **kwargs)
        token = _scope.set("gradient")
        try:
            return original(*args, **kwargs)
        finally:
            _scope.reset(token)

    return execute


# --- the device methods --------------------------------------------------------------------------

def _make_device_method(method: str, original: Callable[..., Any]) -> Callable[..., Any]:
    derivative = method != "execute"

    @functools.wraps(original)
    def observed(self: Any, circuits: Any, *args: Any, **kwargs: Any) -> Any:
        if _inside.get() or not _state.active:
            return original(self, circuits, *args, **kwargs)
        return _observe(method, derivative, original, self, circuits, args, kwargs)

    return observed


class _Job:
    """What is known about a device batch before it runs."""

    __slots__ = ("analytic", "name", "purpose", "shots", "shots_requested", "tapes")

    def __init__(self, dev: Any, circuits: Any, purpose: str) -> None:
        self.name = str(dev.name)
        self.purpose = purpose
        tapes = (circuits,) if isinstance(circuits, QuantumScript) else tuple(circuits)
        self.tapes = tapes
        if len(tapes) == 1:  # the common case (a forward pass): no set, no loop
            n = tapes[0].shots.total_shots
            self.analytic = 1 if n is None else 0
            self.shots = 0 if n is None else n
            self.shots_requested = n
            return
        total, analytic, per = 0, 0, set()
        for t in tapes:
            n = t.shots.total_shots
            if n is None:
                analytic += 1
            else:
                total += n
                per.add(n)
        self.analytic = analytic
        self.shots = total
        self.shots_requested = per.pop() if len(per) == 1 and not analytic else None


_contained = contained(COMPONENT)  # one reusable instance: entered several times per device call


def _observe(method: str, derivative: bool, original: Callable[..., Any], dev: Any, circuits: Any,
             args: tuple, kwargs: dict) -> Any:
    job: _Job | None = None
    with _contained:
        job = _Job(dev, circuits, "gradient" if derivative else _scope.get())
    target: Any = None
    rerouted: tuple[str, str | None] | None = None
    handle = None
    if job is not None:
        try:
            decision = telemetry.check_submit(SubmitRequest(
                operation=OPERATION, backend=job.name, provider=PROVIDER, shots=job.shots,
                circuits=len(job.tapes), purpose=job.purpose, backend_obj=dev,
                circuit_objs=job.tapes)) if telemetry.guards_wanted() else None
        except SubmissionRefused as exc:
            with _contained:
                _refused(job, dev, exc)
            raise
        if decision is not None and decision.fallback is not None:
            target = decision.fallback
            with _contained:
                job.name = str(decision.fallback_name or getattr(target, "name", None) or job.name)
                rerouted = (str(dev.name), decision.reason)
        with _contained:
            handle = telemetry.start_job(OPERATION, job.name, PROVIDER, purpose=job.purpose)
        if not isinstance(circuits, (QuantumScript, tuple, list)):
            circuits = job.tapes  # an iterator was consumed to count it: hand over the materialised batch
    token = _inside.set(True)
    t0 = time.perf_counter()
    try:
        if target is None:
            result = original(dev, circuits, *args, **kwargs)
        else:
            result = getattr(target, method)(circuits, *args, **kwargs)
    except BaseException as exc:
        elapsed = time.perf_counter() - t0
        _inside.reset(token)
        if handle is not None:
            with _contained:
                _finish(handle, job, dev if target is None else target, None, elapsed, exc, rerouted, derivative)
        raise
    elapsed = time.perf_counter() - t0
    _inside.reset(token)
    if handle is not None:
        with _contained:
            _finish(handle, job, dev if target is None else target, result, elapsed, None, rerouted, derivative)
    return result


def _finish(handle: Any, job: _Job, dev: Any, result: Any, elapsed: float, exc: BaseException | None,
            rerouted: tuple[str, str | None] | None, derivative: bool) -> None:
    """Hand the batch over to be recorded (``telemetry.hand_over``: read here unless a listener will
    read the tapes or the result)."""
    handle.t_end = time.perf_counter()
    handle.record.context[CTX_BACKEND] = dev
    telemetry.hand_over(handle, functools.partial(_outcome, job, dev, result, elapsed, exc, rerouted, derivative),
                        contextvars.copy_context())


def _outcome(job: _Job, dev: Any, result: Any, elapsed: float, exc: BaseException | None,
             rerouted: tuple[str, str | None] | None, derivative: bool, handle: Any, keep: bool) -> None:
    """Read a batch's outcome into its record."""
    with _contained:
        _read(job, dev, result, elapsed, exc, rerouted, derivative, handle.record, keep)


def _read(job: _Job, dev: Any, result: Any, elapsed: float, exc: BaseException | None,
          rerouted: tuple[str, str | None] | None, derivative: bool, rec: Any, keep: bool) -> None:
    """A batch's figures into its record; with ``keep``, its tapes, result and counts too, for listeners."""
    tapes = job.tapes
    rec.circuits = len(tapes)
    rec.shots = job.shots
    rec.shots_requested = job.shots_requested
    rec.execution_s = elapsed
    rec.simulator = True if job.name.startswith(SIMULATOR_PREFIXES) else None
    stats = _stats.stats
    rec.stats = [stats(tapes[0])] if len(tapes) == 1 else [stats(t) for t in tapes]
    rec.trainable_params = _trainable(tapes)
    attrs = rec.attributes
    attrs[Attr.ANALYTIC] = job.analytic == len(tapes)
    if rerouted is not None:
        attrs[Attr.REROUTED_FROM] = rerouted[0]
        if rerouted[1]:
            attrs[Attr.REROUTE_REASON] = rerouted[1]
    ctx = rec.context  # CTX_BACKEND was set at hand-over, for the end hooks
    if keep:
        ctx[CTX_CIRCUITS] = tapes
    if exc is not None:
        rec.status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "error"
        rec.error_type = type(exc).__qualname__
    elif keep:
        ctx[CTX_RESULT] = result
        if not derivative:
            counts = _counts(tapes, result)
            if counts is not None:
                ctx[CTX_COUNTS] = counts


def _trainable(tapes: tuple) -> int | None:
    """Most trainable parameters of a tape in the batch.

    ``tape.num_params`` on a tape whose trainable parameters were never set walks every operation
    (about 35 us for 33 gates): it is asked of the first tape only; the others count when known.
    """
    if len(tapes) == 1:
        tp = getattr(tapes[0], "_trainable_params", None)
        return len(tp) if tp is not None else tapes[0].num_params
    known = [len(tp) for t in tapes if (tp := getattr(t, "_trainable_params", None)) is not None]
    if len(known) < len(tapes) and tapes:
        known.append(tapes[0].num_params)
    return max(known, default=None)


def _counts(tapes: tuple, result: Any) -> list[dict[str, int]] | None:
    """Per-circuit counts when every circuit measures exactly one ``qml.counts`` (else None)."""
    for t in tapes:
        ms = t.measurements
        if len(ms) != 1 or not isinstance(ms[0], CountsMP) or t.shots.has_partitioned_shots:
            return None
    res = (result,) if len(tapes) == 1 and isinstance(result, dict) else result
    out = [dict(r) for r in res]
    return out if len(out) == len(tapes) else None


def _refused(job: _Job, dev: Any, exc: SubmissionRefused) -> None:
    handle = telemetry.start_job(OPERATION, job.name, PROVIDER, purpose=job.purpose)
    rec = handle.record
    rec.status = "blocked"
    rec.error_type = type(exc).__qualname__
    rec.submission_reason = getattr(exc, "reason", "budget") or "budget"
    rec.shots_requested = job.shots_requested
    rec.context[CTX_BACKEND] = dev
    rec.context[CTX_CIRCUITS] = job.tapes
    telemetry.finish_job(handle)
