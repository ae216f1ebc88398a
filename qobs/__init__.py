"""qobs: observability and SLOs for quantum machine learning.

``qobs.instrument()`` is the one line: installed adapters (Qiskit, PennyLane, third-party ones)
observe every job from then on. Importing qobs is cheap; SDKs are patched when they are imported.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "annotate_run", "budget", "configure", "estimate", "flush", "instrument", "shutdown",
           "uninstrument"]


def configure(**settings: Any) -> Any:
    """Set options (see ``qobs.config.Settings``); environment variables are the defaults."""
    from qobs import runtime

    return runtime.configure(**settings)


def instrument(**settings: Any) -> list[str]:
    """Start the pipeline and activate every installed adapter. Idempotent; never raises."""
    from qobs import instrumentation, runtime
    from qobs.errors import report_internal

    try:
        if settings:
            runtime.configure(**settings)
        rt = runtime.start()
        if rt is None:
            return []
        return instrumentation.instrument(rt.settings.adapters)
    except Exception as exc:  # noqa: BLE001 - instrumentation must never break the program
        report_internal("instrument", exc)
        return []


def uninstrument() -> None:
    """Restore every patched object, stop the pipeline (flushing the store) and remove qobs's hooks."""
    from qobs import features, instrumentation, runtime

    instrumentation.uninstrument()
    runtime.stop()
    features.deactivate()
    runtime.remove_exit_hooks()


def flush(timeout: float = 5.0) -> None:
    """Record the jobs handed over so far, wait for the fidelity checks they queued and commit queued store rows,
    within ``timeout`` seconds in all."""
    from qobs import runtime

    runtime.flush(timeout)


def shutdown() -> None:
    """End the run now (normally done at exit)."""
    from qobs import runtime

    runtime.stop()


def annotate_run(**fields: Any) -> None:
    """Add provenance to the current run: ``seed=``, ``name=``, or free keys."""
    from qobs.telemetry import annotate_run as _annotate

    _annotate(**fields)


def estimate(circuits: Any, shots: int, backend: Any) -> Any:
    """Estimated cost (``qobs.cost.Cost``: amount, currency, source) of a job before submission."""
    from qobs.cost import estimate as _estimate

    return _estimate(circuits, shots, backend)


def budget(name: str, **kwargs: Any) -> Any:
    """Declare a shot/money budget: ``shots=``, ``usd=``, ``period=``, ``scope=``, ``mode=``, ``fallback=``."""
    from qobs.budgets import budget as _budget

    return _budget(name, **kwargs)
