"""Fresh locks in a forked child.

A fork copies every lock as it is. One that another thread of the parent held at that moment (the
fidelity worker, a Prometheus scrape reading a series, the Qiskit poller handing a job over) stays
held in the child for ever, and the child's first recorded job would wait on it. Modules name the
locks their background threads take; a forked child, single-threaded while ``os.register_at_fork``
runs its hooks, gets new ones. (The recorder's own lock is taken before the fork instead:
``telemetry._before_fork``.)

Imported by ``qobs.errors``, so its hook is registered before any other qobs hook runs in a child.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable

_LOCK = type(threading.Lock())
_RLOCK = type(threading.RLock())
_renewals: list[Callable[[], None]] = []


def fresh(lock: object) -> object:
    """A new lock of ``lock``'s kind (Lock or RLock); anything else is returned as it is."""
    if isinstance(lock, _RLOCK):
        return threading.RLock()
    if isinstance(lock, _LOCK):
        return threading.Lock()
    return lock


def renew_attr(obj: object, name: str = "_lock") -> None:
    """Replace ``obj.<name>`` with a fresh lock of its kind, when it is one."""
    old = getattr(obj, name, None)
    new = fresh(old)
    if new is not old:
        setattr(obj, name, new)


def module_locks(module: str, *names: str) -> None:
    """Renew the module-level locks ``names`` of ``module`` in every forked child."""
    _renewals.append(lambda: [renew_attr(sys.modules[module], n) for n in names if module in sys.modules])


def on_fork(fn: Callable[[], None]) -> None:
    """Run ``fn`` in every forked child, before qobs's other after-fork hooks (it renews locks of objects)."""
    _renewals.append(fn)


def _after_fork_in_child() -> None:
    failed: list[Exception] = []
    for fn in _renewals:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - reported once every lock is new (reporting takes locks)
            failed.append(exc)
    if failed:
        from qobs.errors import report_internal

        for exc in failed:
            report_internal("fork", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
