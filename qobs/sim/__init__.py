"""``qobs.sim``: a simulated remote QPU for tests, game days and demos (no network).

``SimulatedQPU`` is a Qiskit BackendV2 (Aer + FakeManilaV2 noise, needs ``qiskit-ibm-runtime``)
with queue delays, faults, credential expiry and calibration drift; see ``qobs.sim.backend``.
``qobs.sim.pennylane.SimulatedQPUDevice`` is the same QPU as a PennyLane device.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CredentialsExpiredError", "JobCancelledError", "SimJob", "SimulatedQPU"]


def __getattr__(name: str) -> Any:  # keep `import qobs.sim` free of qiskit until used
    if name in __all__:
        from qobs.sim import backend

        return getattr(backend, name)
    raise AttributeError(name)
