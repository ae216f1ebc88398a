"""Exceptions qobs raises to users, and containment of everything else.

Instrumentation must never break the user's program: any failure inside qobs is caught by
``contained``, logged once per (component, exception type), and counted in
``qobs_internal_errors_total``. The user's own exceptions never pass through it.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from qobs import _forksafe

log = logging.getLogger("qobs")

P = ParamSpec("P")
R = TypeVar("R")


class QobsError(Exception):
    """An error qobs reports to a person: one line, no traceback."""


class ConfigError(QobsError):
    """Bad configuration (environment, files, arguments)."""


class StoreError(QobsError):
    """The run store cannot be opened or written."""


class CommandError(QobsError):
    """The program given to ``qobs run`` cannot be started (exit code as a shell's: 126, 127)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


_seen: set[tuple[str, str]] = set()
_seen_lock = threading.Lock()
_forksafe.module_locks(__name__, "_seen_lock")
# Counts kept even before (or without) the metrics registry, for tests and `qobs runs show`.
internal_error_counts: dict[str, int] = {}


def report_internal(component: str, exc: BaseException) -> None:
    """Record a contained failure: log once per kind, count always. Never raises."""
    try:
        key = (component, type(exc).__name__)
        with _seen_lock:
            first = key not in _seen
            _seen.add(key)
            internal_error_counts[component] = internal_error_counts.get(component, 0) + 1
        if first:
            log.warning("qobs: %s failed (%s: %s); telemetry continues without it", component,
                        type(exc).__name__, exc)
        from qobs import metrics

        metrics.count_internal_error(component)
    except Exception:  # noqa: BLE001 - the last line of defence must not raise
        pass


class contained:
    """Run a block of qobs code; swallow and count its failures (``Exception``; ``KeyboardInterrupt``
    and ``SystemExit`` pass). A class rather than a generator: adapters enter it several times per
    job, and an instance holds no state, so one can be kept and reused (``_contained = contained(C)``)."""

    __slots__ = ("component",)

    def __init__(self, component: str) -> None:
        self.component = component

    def __enter__(self) -> None:
        return None

    def __exit__(self, tp: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if tp is not None and issubclass(tp, Exception):
            report_internal(self.component, exc)  # type: ignore[arg-type]
            return True
        return False


def safe(component: str, default: R | None = None) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorator form of ``contained`` that returns ``default`` on failure."""

    def deco(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                report_internal(component, exc)
                return default

        return inner

    return deco
