"""Process-wide qobs state: settings, the run, the store writer, tracing and exporters.

``start()`` brings the pipeline up once; every part is optional and contained, so a locked
store or a taken port disables that part (logged once, counted) and the rest goes on.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from qobs import _forksafe, config
from qobs.errors import contained, report_internal
from qobs.redact import redact, redact_argv


class Runtime:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.run_id = settings.run_id or new_run_id()
        # The process that made the run id ends the run; under `qobs run` the parent does, and
        # worker processes sharing the run (forked or spawned) never mark it finished.
        self.owner = settings.run_id is None
        self.started_at = time.time()
        self.writer: Any | None = None
        self.tracing: Any | None = None
        self.http_server: Any | None = None
        self.status = "running"
        self._ended = False


_rt: Runtime | None = None
_lock = threading.RLock()
_settings_override: dict[str, Any] = {}


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def settings() -> config.Settings:
    return _rt.settings if _rt else config.from_env(**_settings_override)


def configure(**overrides: Any) -> config.Settings:
    """Set options (validated now); a running pipeline is restarted with them."""
    with _lock:
        s = config.from_env(**{**_settings_override, **overrides})
        _settings_override.update(overrides)
        if _rt is not None:
            stop()
            start()
        return s


def current() -> Runtime | None:
    return _rt


def start() -> Runtime | None:
    """Bring the pipeline up (idempotent). Returns None when qobs is disabled or misconfigured."""
    global _rt
    with _lock:
        if _rt is not None:
            return _rt
        try:
            s = config.from_env(**_settings_override)
        except Exception as exc:  # noqa: BLE001 - a bad env var must not break the user's program
            report_internal("config", exc)
            return None
        if not s.enabled:
            return None
        rt = Runtime(s)
        with contained("metrics"):  # before any other collector: a collection first records pending jobs
            from qobs import telemetry

            telemetry.install_drain_collector()
        with contained("tracing"):
            from qobs.tracing import Tracing

            rt.tracing = Tracing(s)
        with contained("metrics"):
            from qobs import metrics

            metrics.instruments(s.label_limit, rt.tracing.meter if rt.tracing else None)
        path = config.store_path(s)
        if path is not None:
            with contained("store"):
                from qobs.store import Writer

                rt.writer = Writer(path, s.flush_interval)
                rt.writer.insert_once("runs", provenance(rt))
        if s.serve_prometheus:
            with contained("prometheus_server"):
                from prometheus_client import start_http_server

                rt.http_server = start_http_server(s.prometheus_port, addr=s.prometheus_host)
        with contained("features"):  # cost, budgets, fidelity probe, calibration (imports no SDK)
            from qobs import features

            features.activate(s)
        _rt = rt
        _lean_changed()
        _install_exit_hooks()
        return rt


def _lean_changed() -> None:
    from qobs import telemetry

    telemetry.lean_changed()  # whether jobs may take the lean lane depends on the runtime and its settings


STOP_CHECKS_WAIT_S = 2.0  # at most, for the fidelity checks still queued when the run ends (each takes ms)


def stop(status: str | None = None, exit_code: int | None = None, *, final: bool = False) -> None:
    """End the run: record its end, flush the store, push metrics, stop exporters.

    ``final`` (at exit) also shuts down the OpenTelemetry providers qobs made; otherwise they are
    flushed and kept, since a process can set its global providers only once and a restarted
    pipeline (``configure``, ``instrument`` after ``uninstrument``) must still export.
    """
    global _rt
    if final:
        exit_work()  # adapters record the jobs that ended unseen (before the drain below)
    if _rt is not None:
        with contained("recorder"):  # jobs handed over but not yet recorded belong to this run
            from qobs import telemetry

            telemetry.drain()
        _wait_for_checks(STOP_CHECKS_WAIT_S)  # so do their fidelity checks' events
    with _lock:
        rt, _rt = _rt, None
    _lean_changed()
    if rt is None or rt._ended:
        return
    rt._ended = True
    ended = status or ("failed" if rt.status == "failed" else "interrupted" if rt.status == "interrupted"
                       else "finished")
    if rt.writer is not None:
        with contained("store"):
            if rt.owner:
                row: dict[str, Any] = {"run_id": rt.run_id, "ended_at": time.time(), "status": ended}
                if exit_code is not None:
                    row["exit_code"] = exit_code
                rt.writer.update_run(row)
            rt.writer.close()
    if rt.settings.pushgateway_url:
        with contained("pushgateway"):
            from prometheus_client import REGISTRY, push_to_gateway

            push_to_gateway(rt.settings.pushgateway_url, job=rt.settings.service_name, registry=REGISTRY,
                            grouping_key={"run_id": rt.run_id}, timeout=5)
    if rt.http_server is not None:
        with contained("prometheus_server"):
            server = rt.http_server[0] if isinstance(rt.http_server, tuple) else rt.http_server
            server.shutdown()
            server.server_close()
    if rt.tracing is not None:
        with contained("tracing"):
            rt.tracing.shutdown(final=final)


def flush(timeout: float = 5.0, *, wait_for_lock: bool = True) -> None:
    """Record jobs handed over so far, wait (at most ``timeout``) for the fidelity checks they queued, and
    commit queued store rows now (tests and CLI use it; the recorder, the checks and the writer also run on
    their own). Without ``wait_for_lock``, rows that find the store locked by another process go back to
    the writer thread instead of waiting for it."""
    from qobs import telemetry

    deadline = time.monotonic() + timeout
    with contained("recorder"):
        telemetry.drain()
    _wait_for_checks(max(deadline - time.monotonic(), 0.0))  # the checks' events are rows too
    rt = _rt
    if rt is not None and rt.writer is not None:
        if wait_for_lock:
            rt.writer.flush(max(deadline - time.monotonic(), 0.0))
        else:
            rt.writer.commit_now()


def _wait_for_checks(timeout: float) -> None:
    """Wait (at most ``timeout``) for the fidelity checks queued so far, when the features are loaded (the
    caller has drained the recorder, which queues them)."""
    fidelity = sys.modules.get("qobs.fidelity")
    if fidelity is not None:
        with contained("fidelity"):
            fidelity.wait_queued(timeout)


_hooks_installed = False
_hooks: dict[str, Any] = {}  # what _install_exit_hooks put in place, for remove_exit_hooks


class _MpHook:
    """A long-lived object for multiprocessing's after-fork registry (it holds weak references)."""


_MP_HOOK = _MpHook()


def _at_exit() -> None:
    """End the run at exit. A Ctrl-C pressed again while the program exits must not cut the recording of
    its last jobs short (nor print a qobs traceback): SIGINT is ignored for the few seconds, each bounded,
    this takes."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except (ValueError, OSError):
            previous = None
    try:
        stop(final=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


_exit_callbacks: list[tuple[int, Any]] = []  # (pid of the process that added it, fn): run there only
_exit_lock = threading.Lock()
_forksafe.module_locks(__name__, "_lock", "_exit_lock")


def add_exit_callback(fn: Any) -> None:
    """Run ``fn()`` at exit, before the last jobs are recorded (an adapter's jobs that ended unseen), in this
    process only (a forked child does not redo its parent's work). ``fn`` must be safe to call twice."""
    with _exit_lock:
        _exit_callbacks.append((os.getpid(), fn))


def exit_work() -> None:
    """At exit: run this process's exit callbacks and record every job handed over, while a run is open.

    Called by the exit hook, and earlier by ``before_provider_shutdown``'s hook: an SDK tracer provider
    shuts itself down from ``atexit``, and one the program made after qobs started (always so under
    ``qobs run``) does that before qobs's own exit hook runs, which would drop the last jobs' spans."""
    if _rt is None:
        return
    pid = os.getpid()
    with _exit_lock:
        mine = [fn for p, fn in _exit_callbacks if p == pid]  # each may run again: it records what is left
    for fn in mine:
        with contained("exit_callback"):
            fn()
    with contained("recorder"):
        from qobs import telemetry

        telemetry.drain()


def before_provider_shutdown() -> None:
    """Do ``exit_work`` before the SDK shuts down the tracer provider the program just made (call it when a
    span is first made under a provider: its ``atexit`` shutdown is registered already, so ours runs first).
    The exit hook itself stays where it is, after the program's own ``atexit`` work."""
    pid = os.getpid()
    atexit.register(lambda: exit_work() if os.getpid() == pid else None)


def _install_exit_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    previous = sys.excepthook

    def excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
        rt = _rt
        if rt is not None:
            rt.status = "interrupted" if issubclass(tp, KeyboardInterrupt) else "failed"
        previous(tp, value, tb)

    sys.excepthook = excepthook
    _hooks.update(excepthook=excepthook, previous_excepthook=previous)
    # multiprocessing children leave through os._exit, which skips atexit; their finalizers run.
    # A forked child starts with an empty finalizer registry, so register again after each fork.
    with contained("exit_hooks"):
        from multiprocessing import util as mp_util

        _hooks["finalizer"] = mp_util.Finalize(None, _at_exit, exitpriority=100)
        if not _hooks.get("fork_registered"):  # neither registry can forget an entry: register once per process
            _hooks["fork_registered"] = True
            mp_util.register_after_fork(_MP_HOOK, lambda _obj: mp_util.Finalize(None, _at_exit, exitpriority=100))
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork)
    with contained("exit_hooks"):
        from multiprocessing import pool

        if not getattr(pool.worker, "__qobs_wrapped__", False):
            _hooks["pool_worker"] = pool.worker
            pool.worker = _pool_worker(pool.worker)


class _CommitBeforeResult:
    """A pool worker's result queue: the jobs a task ran are recorded and committed before its result goes
    back. ``with Pool() as p:`` terminates its workers (SIGTERM, no exit hooks) as soon as the results are
    in: their last jobs were lost with them."""

    __slots__ = ("_queue",)

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def put(self, obj: Any) -> None:
        if _rt is not None:
            with contained("store"):
                flush(wait_for_lock=False)  # a store another process holds locked does not stall the task
        self._queue.put(obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def _pool_worker(orig: Any) -> Any:
    """``multiprocessing.pool.worker`` that commits a task's jobs before returning its result, in a worker
    process (a ThreadPool's workers are threads of the program's process: they do not commit per task)."""
    import functools
    import multiprocessing

    @functools.wraps(orig)
    def worker(inqueue: Any, outqueue: Any, *args: Any, **kwargs: Any) -> Any:
        if multiprocessing.parent_process() is not None:
            outqueue = _CommitBeforeResult(outqueue)
        return orig(inqueue, outqueue, *args, **kwargs)

    worker.__qobs_wrapped__ = True  # type: ignore[attr-defined]
    return worker


def remove_exit_hooks() -> None:
    """Undo ``_install_exit_hooks`` (``qobs.uninstrument()``). The fork hooks stay: they do nothing without a run."""
    global _hooks_installed
    if not _hooks_installed:
        return
    _hooks_installed = False
    atexit.unregister(_at_exit)
    if sys.excepthook is _hooks.get("excepthook"):  # someone who wrapped ours keeps their hook
        sys.excepthook = _hooks["previous_excepthook"]
    finalizer = _hooks.pop("finalizer", None)
    if finalizer is not None:
        finalizer.cancel()
    original = _hooks.pop("pool_worker", None)
    if original is not None:
        from multiprocessing import pool

        if getattr(pool.worker, "__qobs_wrapped__", False):
            pool.worker = original


def _after_fork() -> None:
    """A forked child has no writer thread: give it its own writer on the same store and run."""
    rt = _rt
    if rt is None:
        return
    rt.owner = False
    if rt.writer is None:
        return
    try:
        from qobs.store import Writer

        rt.writer = Writer(rt.writer.path, rt.settings.flush_interval)
    except Exception as exc:  # noqa: BLE001
        rt.writer = None
        report_internal("store", exc)


def provenance(rt: Runtime) -> dict[str, Any]:
    from qobs import __version__
    from qobs._versions import sdk_version

    return {
        "run_id": rt.run_id, "name": rt.settings.run_name, "started_at": rt.started_at, "status": "running",
        "qobs_version": __version__, "python": platform.python_version(), "qiskit": sdk_version("qiskit"),
        "qiskit_aer": sdk_version("qiskit-aer"), "pennylane": sdk_version("pennylane"),
        "host": socket.gethostname(), "pid": os.getpid(), "argv": _argv(),
        "cwd": os.getcwd(), "git_commit": git_commit(Path.cwd()), "service": rt.settings.service_name,
        "extra": redact({k: v for k, v in rt.settings.extra.items() if k not in ("QOBS_RUN_ID", "QOBS_RUN_ARGV")}),
    }


def _argv() -> list[str]:
    """What was run: the command `qobs run` started (``QOBS_RUN_ARGV``, already redacted; ``sys.argv`` is read
    too early under it to hold ``-m module``), else ``sys.argv``."""
    given = os.environ.get("QOBS_RUN_ARGV")
    if given:
        try:
            argv = json.loads(given)
        except ValueError:
            argv = None
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            return argv
    return redact_argv(list(sys.argv))


def git_commit(start: Path) -> str | None:
    """The checked-out commit, read from ``.git`` files (no subprocess)."""
    try:
        for d in (start, *start.parents):
            git = d / ".git"
            if git.is_file():  # worktree or submodule: "gitdir: PATH"
                git = (d / git.read_text().split(":", 1)[1].strip()).resolve()
            if not git.is_dir():
                continue
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref:"):
                return head
            ref = head.split(":", 1)[1].strip()
            common = git / "commondir"
            roots = [git] + ([(git / common.read_text().strip()).resolve()] if common.is_file() else [])
            for root in roots:
                if (root / ref).is_file():
                    return (root / ref).read_text().strip()
                packed = root / "packed-refs"
                if packed.is_file():
                    for line in packed.read_text().splitlines():
                        if line.endswith(" " + ref):
                            return line.split()[0]
            return None
    except OSError:
        return None
    return None
