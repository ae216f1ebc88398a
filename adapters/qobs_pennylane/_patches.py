"""The PennyLane patches (imported only once PennyLane is). See the package docstring for the rules."""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar, copy_context
from time import perf_counter
from types import ModuleType
from typing import Any

from pennylane.measurements import CountsMP
from pennylane.tape import QuantumScript

from qobs import _forksafe, telemetry
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
_forksafe.on_fork(lambda: _forksafe.renew_attr(_state, "lock"))


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
    """The observed device method: describe the batch, ask the guards, open the job, run the original
    outside any containment (user exceptions propagate unchanged), hand the outcome over.

    One function layer on the per-call path, and plain ``try``/``except`` (reporting through
    ``report_internal``) where ``contained`` would cost a context manager per step."""
    derivative = method != "execute"

    @functools.wraps(original)
    def observed(self: Any, circuits: Any, *args: Any, **kwargs: Any) -> Any:
        if not _state.active or _inside.get():
            return original(self, circuits, *args, **kwargs)
        job: _Job | None
        try:
            job = _Job(self, circuits, "gradient" if derivative else _scope.get(), derivative)
        except Exception as exc:  # noqa: BLE001
            report_internal(COMPONENT, exc)
            job = None
        target: Any = None
        handle = None
        if job is not None:
            decision = None
            if telemetry.guards_wanted():
                try:
                    decision = telemetry.check_submit(SubmitRequest(
                        operation=OPERATION, backend=job.name, provider=PROVIDER, shots=job.shots,
                        circuits=len(job.tapes), purpose=job.purpose, backend_obj=self, circuit_objs=job.tapes))
                except SubmissionRefused as exc:
                    try:
                        _refused(job, self, exc)
                    except Exception as inner:  # noqa: BLE001
                        report_internal(COMPONENT, inner)
                    raise
            if decision is not None and decision.fallback is not None:
                target = decision.fallback
                try:
                    job.reroute(self, decision)
                except Exception as exc:  # noqa: BLE001
                    report_internal(COMPONENT, exc)
            try:
                handle = telemetry.start_job(OPERATION, job.name, PROVIDER, purpose=job.purpose)
            except Exception as exc:  # noqa: BLE001
                report_internal(COMPONENT, exc)
            if not isinstance(circuits, (QuantumScript, tuple, list)):
                circuits = job.tapes  # an iterator was consumed to count it: hand over the materialised batch
        token = _inside.set(True)
        t0 = perf_counter()
        try:
            if target is None:
                result = original(self, circuits, *args, **kwargs)
            else:
                result = getattr(target, method)(circuits, *args, **kwargs)
        except BaseException as exc:
            t1 = perf_counter()
            _inside.reset(token)
            if handle is not None:
                _hand_over(handle, job, self if target is None else target, None, t1 - t0, t1, exc)
            raise
        t1 = perf_counter()
        _inside.reset(token)
        if handle is not None:
            _hand_over(handle, job, self if target is None else target, result, t1 - t0, t1, None)
        return result

    return observed


class _Job:
    """A device batch: what is known before it runs (name, purpose, shots, tapes) and, once it ran, its
    outcome. Its bound ``read`` is what ``telemetry.hand_over`` runs to fill the record."""

    __slots__ = ("analytic", "derivative", "elapsed", "error", "name", "purpose", "rerouted", "result",
                 "shots", "shots_requested", "tapes")

    def __init__(self, dev: Any, circuits: Any, purpose: str, derivative: bool) -> None:
        self.name = str(dev.name)
        self.purpose = purpose
        self.derivative = derivative
        self.rerouted: tuple[str, str | None] | None = None
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

    def reroute(self, dev: Any, decision: Any) -> None:
        """A guard sent the batch to ``decision.fallback``: record it under the fallback's name."""
        target = decision.fallback
        self.name = str(decision.fallback_name or getattr(target, "name", None) or self.name)
        self.rerouted = (str(dev.name), decision.reason)

    def read(self, handle: Any, keep: bool) -> None:
        """The batch's figures into its record; with ``keep``, its tapes, result and counts too, for
        listeners."""
        try:
            rec = handle.record
            tapes = self.tapes
            n = len(tapes)
            rec.circuits = n
            rec.shots = self.shots
            rec.shots_requested = self.shots_requested
            rec.execution_s = self.elapsed
            sim = _simulator.get(self.name)
            if sim is None:
                sim = _simulator[self.name] = self.name.startswith(SIMULATOR_PREFIXES)
            rec.simulator = True if sim else None
            if n == 1:
                rec.stats.append(_stats.stats(tapes[0]))
                tp = getattr(tapes[0], "_trainable_params", None)
                rec.trainable_params = len(tp) if tp is not None else tapes[0].num_params
            else:
                rec.stats = _stats.stats_batch(tapes)
                rec.trainable_params = _trainable(tapes)
            attrs = rec.attributes
            attrs[Attr.ANALYTIC] = self.analytic == n
            rerouted = self.rerouted
            if rerouted is not None:
                attrs[Attr.REROUTED_FROM] = rerouted[0]
                if rerouted[1]:
                    attrs[Attr.REROUTE_REASON] = rerouted[1]
            ctx = rec.context  # CTX_BACKEND was set at hand-over, for the end hooks
            if keep:
                ctx[CTX_CIRCUITS] = tapes
            error = self.error
            if error is not None:
                rec.status = "cancelled" if issubclass(error, KeyboardInterrupt) else "error"
                rec.error_type = error.__qualname__
            elif keep:
                ctx[CTX_RESULT] = self.result
                if not self.derivative:
                    counts = _counts(tapes, self.result)
                    if counts is not None:
                        ctx[CTX_COUNTS] = counts
        except Exception as exc:  # noqa: BLE001
            report_internal(COMPONENT, exc)


_simulator: dict[str, bool] = {}  # device name -> whether it is a local simulator (SIMULATOR_PREFIXES)


def _hand_over(handle: Any, job: _Job, dev: Any, result: Any, elapsed: float, t_end: float,
               exc: BaseException | None) -> None:
    """Hand the batch over to be recorded (``telemetry.hand_over``: read here unless a listener will
    read the tapes or the result)."""
    try:
        job.result = result
        job.elapsed = elapsed
        # The type only: the exception's traceback holds the frame that holds this job (a cycle that would
        # keep the user's frames and tapes alive until the cyclic GC ran).
        job.error = type(exc) if exc is not None else None
        handle.t_end = t_end
        handle.record.context[CTX_BACKEND] = dev
        telemetry.hand_over(handle, job.read, copy_context())
    except Exception as err:  # noqa: BLE001
        report_internal(COMPONENT, err)


def _trainable(tapes: tuple) -> int | None:
    """Most trainable parameters of a tape in the batch (``_Job.read`` reads a single tape's itself).

    ``tape.num_params`` on a tape whose trainable parameters were never set walks every operation
    (about 35 us for 33 gates): it is asked of the first tape only; the others count when known.
    """
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
