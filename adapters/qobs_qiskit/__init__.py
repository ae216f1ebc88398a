"""qobs adapter for Qiskit: V2 primitives, ``BackendV2.run``, transpilation and IBM runtime jobs.

Supported: qiskit 1.4 - 2.x (the V2 primitives era), qiskit-aer 0.16 - 0.18, and optionally
qiskit-ibm-runtime 0.34+ (its local fake-backend mode included). Tested with qiskit 2.6.2 /
qiskit-aer 0.18.2 / qiskit-ibm-runtime 0.51.0, and with qiskit 1.4.6 / qiskit-aer 0.16.4 through
``QOBS_QISKIT_COMPAT_PYTHON`` (tests/adapters/test_qiskit_e2e.py).

Importing this module does not import qiskit. ``on_import`` runs once qiskit (or qiskit_aer,
qiskit_ibm_runtime) is imported and hooks, through the ``Patcher``:

- ``run`` of ``BaseSamplerV2``/``BaseEstimatorV2``/``BackendV2`` subclasses (every existing
  subclass that defines its own ``run``, and, via a hooked ``__init_subclass__``, every subclass
  defined later); a per-thread scope keeps a ``run`` that calls ``super().run`` or another
  primitive/backend (primitives built on ``backend.run``) from being counted twice;
- ``transpile`` where users reference it (``qiskit.transpile``, ``qiskit.compiler.transpile``,
  ``qiskit.compiler.transpiler.transpile``) and ``run`` of pass managers, so preset pass managers
  and a ``transpile`` bound by ``from qiskit import transpile`` *before* ``instrument()`` are still
  observed (through the pass manager the function runs);
- ``result`` of the job classes seen, plus a done-callback on the job's future (or a polling
  finisher), so a job is recorded when it completes even if ``result()`` is called late or never.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

__all__ = ["SUPPORTED", "QiskitAdapter"]

SUPPORTED = {"qiskit": ">=1.4,<3", "qiskit-aer": ">=0.16", "qiskit-ibm-runtime": ">=0.34"}


class QiskitAdapter:
    """Registered under the ``qobs.adapters`` entry point ``qiskit``."""

    name = "qiskit"
    modules = ("qiskit", "qiskit_aer", "qiskit_ibm_runtime")

    def on_import(self, module: ModuleType, patcher: Any) -> None:
        from qobs_qiskit import _hooks

        _hooks.install(module.__name__, patcher)

    def uninstrument(self) -> None:
        hooks = sys.modules.get("qobs_qiskit._hooks")
        if hooks is not None:
            hooks.reset()
