"""The simulated remote QPU as a PennyLane device: ``SimulatedQPUDevice``.

Every execution runs on a ``qobs.sim.SimulatedQPU`` (the same queue delays, faults, credential
expiry, calibration drift and catalog price as the Qiskit backend): each tape, decomposed to the
QPU's gates and with its measurements diagonalised, becomes a Qiskit circuit measured on every wire,
and the measurements are computed from the counts. Shots are required (a QPU samples).

The device is observed like any PennyLane device (one job per batch, device name ``sim_<name>``,
priced by the catalog). The inner Qiskit job runs on a ``qobs-`` thread, which the Qiskit adapter
treats as internal, so a job is never counted twice.
"""

from __future__ import annotations

import threading
from typing import Any

import pennylane as qml
from pennylane.devices import Device, ExecutionConfig
from pennylane.devices.preprocess import decompose, validate_device_wires, validate_measurements
from pennylane.measurements import SampleMeasurement

from qobs.sim.backend import SimulatedQPU

try:
    from pennylane.exceptions import DeviceError
except ImportError:  # PennyLane < 0.42
    DeviceError = qml.DeviceError

# PennyLane operation name -> Qiskit gate method (parameters first, then qubits, as both take them)
_GATES: dict[str, str] = {
    "Hadamard": "h", "PauliX": "x", "PauliY": "y", "PauliZ": "z", "S": "s", "T": "t", "SX": "sx",
    "RX": "rx", "RY": "ry", "RZ": "rz", "PhaseShift": "p", "CNOT": "cx", "CZ": "cz", "SWAP": "swap",
    "Identity": "id",
}


def _supported(op: qml.operation.Operator) -> bool:
    return op.name in _GATES


class SimulatedQPUDevice(Device):
    """``qml.device``-free construction: ``SimulatedQPUDevice(wires=3, shots=1024, seed=0, failure_rate=0.1)``.

    Keyword arguments other than ``wires``, ``shots``, ``name`` and ``qpu`` go to ``SimulatedQPU``;
    pass ``qpu=`` to share one simulated QPU (and its drift and queue) with Qiskit code.
    """

    def __init__(self, wires: Any = None, shots: int | None = None, *, name: str = "sim_manila",
                 qpu: SimulatedQPU | None = None, **qpu_options: Any) -> None:
        super().__init__(wires=wires, shots=shots)
        self.qpu = qpu if qpu is not None else SimulatedQPU(name, **qpu_options)

    @property
    def name(self) -> str:  # the QPU's name, so that the catalog prices it and dashboards group it
        return self.qpu.name

    @property
    def target(self) -> Any:  # calibration snapshots read the device model through it
        return self.qpu.target

    def preprocess_transforms(self, execution_config: ExecutionConfig | None = None) -> Any:
        program = qml.CompilePipeline() if hasattr(qml, "CompilePipeline") else qml.transforms.core.TransformProgram()
        program.add_transform(validate_device_wires, self.wires, name=self.name)
        program.add_transform(decompose, stopping_condition=_supported, name=self.name)
        program.add_transform(validate_measurements, sample_measurements=lambda m: isinstance(m, SampleMeasurement),
                              analytic_measurements=lambda m: False, name=self.name)
        program.add_transform(qml.transforms.split_non_commuting)  # one tape per group of commuting observables
        program.add_transform(qml.transforms.diagonalize_measurements)
        program.add_transform(qml.transforms.broadcast_expand)
        return program

    def execute(self, circuits: Any, execution_config: ExecutionConfig | None = None) -> Any:
        results = []
        for tape in circuits:
            if not tape.shots or tape.shots.has_partitioned_shots:
                raise DeviceError(f"{self.name} samples: give a single finite number of shots")
            wires = self.wires if self.wires is not None else tape.wires
            counts = self._run(tape, wires, tape.shots.total_shots)
            res = tuple(m.process_counts(counts, wires) for m in tape.measurements)
            results.append(res[0] if len(res) == 1 else res)
        return tuple(results)

    def _run(self, tape: Any, wires: Any, shots: int) -> dict[str, int]:
        from qiskit import QuantumCircuit

        index = {w: i for i, w in enumerate(wires)}
        qc = QuantumCircuit(len(wires))
        for op in tape.operations:
            getattr(qc, _GATES[op.name])(*[float(p) for p in op.parameters], *[index[w] for w in op.wires])
        qc.measure_all()
        box: dict[str, Any] = {}

        def submit() -> None:  # a qobs- thread: the Qiskit adapter does not record this inner job again
            try:
                box["counts"] = self.qpu.run(qc, shots=shots).result().get_counts()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
                box["error"] = exc

        t = threading.Thread(target=submit, name=f"qobs-sim-pennylane-{self.qpu.name}", daemon=True)
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        # Qiskit's bitstrings put qubit 0 last; PennyLane's put the first wire first.
        return {k.replace(" ", "")[::-1]: v for k, v in box["counts"].items()}
