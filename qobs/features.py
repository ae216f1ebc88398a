"""Cost, budgets, fidelity probe and calibration snapshots, plugged into the job pipeline.

``runtime.start()`` calls ``activate(settings)``: one job listener (cost first, so that budgets see
the job's price; then budgets, the fidelity probe and the calibration snapshot, each contained on
its own) and the budget submit guard. Importing this module imports no SDK.
"""

from __future__ import annotations

from typing import Any

from qobs import config
from qobs.errors import contained, report_internal

_settings: config.Settings | None = None
_active = False


def settings() -> config.Settings:
    """Settings the features run with (the runtime's, else the environment's)."""
    global _settings
    if _settings is None:
        from qobs import runtime

        _settings = runtime.settings()
    return _settings


_steps: tuple[tuple[str, Any], ...] | None = None


def _listener_steps() -> tuple[tuple[str, Any], ...]:
    global _steps
    if _steps is None:
        from qobs import budgets, calibration, cost, fidelity

        _steps = (("probe_mark", fidelity.mark_probe), ("cost", cost.on_job), ("budgets", budgets.on_job),
                  ("fidelity", fidelity.on_job), ("calibration", calibration.on_job))
    return _steps


def on_job(record: Any) -> None:
    """The one job listener: mark probe jobs, price, count against budgets, probe fidelity, snapshot.

    Each step is contained on its own: a failing one is counted and the next still runs.
    """
    for component, step in _steps or _listener_steps():
        try:
            step(record)
        except Exception as exc:  # noqa: BLE001
            report_internal(component, exc)


def guard(request: Any) -> Any:
    from qobs import budgets

    return budgets.guard(request)


_budget_table: dict[str, Any] = {}  # qobs.budgets' declared budgets (the same dict), bound by activate()


def _guard_wanted() -> bool:
    return bool(_budget_table)


guard.wanted = _guard_wanted  # type: ignore[attr-defined]  # no budget: adapters skip describing jobs to it


def activate(s: config.Settings) -> None:
    """Register the listener and guard (idempotent) and reload files named by the settings."""
    global _settings, _active, _budget_table
    from qobs import budgets, calibration, cost, fidelity, telemetry

    _settings = s
    _budget_table = budgets._budgets
    cost.reset()
    fidelity.reset()
    with contained("budgets"):
        budgets.load_file(s.budgets)
    telemetry.add_job_listener(on_job)
    telemetry.add_submit_guard(guard)
    telemetry.add_end_hook(calibration.at_end)
    telemetry.add_result_wanter(fidelity.wants_result)
    _active = True


def deactivate() -> None:
    """Unregister the listener and guard (``qobs.uninstrument()``)."""
    global _active, _settings
    from qobs import calibration, fidelity, telemetry

    telemetry.remove_job_listener(on_job)
    telemetry.remove_submit_guard(guard)
    telemetry.remove_end_hook(calibration.at_end)
    telemetry.remove_result_wanter(fidelity.wants_result)
    _active, _settings = False, None


def ensure_active() -> None:
    """Activate with the current settings when the runtime has not (library use before instrument)."""
    if not _active:
        from qobs import runtime

        rt = runtime.current() or runtime.start()
        if not _active:
            activate(rt.settings if rt is not None else runtime.settings())
