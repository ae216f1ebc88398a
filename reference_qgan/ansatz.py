"""Generator ansatzes, described once as a gate list and built for Qiskit, PennyLane and NumPy from it.

Encoding contract (the same for every SDK): the generated value of a shot is ``sum_i 2**i * b_i``
where ``b_i`` is the measured bit of qubit (wire) ``i``. That is the integer value of Qiskit's
bitstring (qubit 0 is its rightmost character); PennyLane measures ``probs(wires=[n-1, ..., 0])``
so that its index is the same integer. State-preparation amplitudes use the same index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ANSATZES = ("efficient_su2", "paper")
MAPPING = "value = sum_i 2**i * b_i, b_i the measured bit of qubit i (Qiskit bitstring read as binary)"

# A gate: ("h", q) | ("ry"|"rz", q, param_index) | ("cx", control, target) | ("cz", a, b) | ("prep", amplitudes)
Gate = tuple


@dataclass(frozen=True)
class Ansatz:
    """A parameterised generator circuit over ``qubits`` qubits."""

    name: str
    qubits: int
    reps: int
    gates: tuple[Gate, ...]
    num_params: int

    def describe(self) -> dict[str, Any]:
        return {"ansatz": self.name, "reps": self.reps, "num_params": self.num_params}


def efficient_su2(qubits: int = 3, reps: int = 2) -> Ansatz:
    """Hadamard layer, then ``reps + 1`` layers of RY and RZ on every qubit with a CX chain in between.

    Parameter order follows Qiskit's ``efficient_su2``: per layer RY on qubits 0..n-1, then RZ.
    """
    gates: list[Gate] = [("h", q) for q in range(qubits)]
    k = 0
    for layer in range(reps + 1):
        for rot in ("ry", "rz"):
            for q in range(qubits):
                gates.append((rot, q, k))
                k += 1
        if layer < reps:
            gates += [("cx", q, q + 1) for q in range(qubits - 1)]
    return Ansatz("efficient_su2", qubits, reps, tuple(gates), k)


def paper(qubits: int = 3, reps: int = 1, mu: float = 1.0, sigma: float = 1.0) -> Ansatz:
    """Zoufal et al.'s generator: a discretised N(mu, sigma) input state, then
    ``TwoLocal(n, "ry", "cz", entanglement="circular", reps)`` (same parameter order)."""
    from reference_qgan.targets import discretised_normal

    amps = tuple(np.sqrt(discretised_normal(2**qubits, mu, sigma)).tolist())
    gates: list[Gate] = [("prep", amps)]
    k = 0
    for layer in range(reps + 1):
        for q in range(qubits):
            gates.append(("ry", q, k))
            k += 1
        if layer < reps:
            pairs = [(qubits - 1, 0)] + [(q, q + 1) for q in range(qubits - 1)] if qubits > 2 else [(0, 1)]
            gates += [("cz", a, b) for a, b in pairs]
    return Ansatz("paper", qubits, reps, tuple(gates), k)


def make(name: str, qubits: int = 3, reps: int | None = None) -> Ansatz:
    if name == "efficient_su2":
        return efficient_su2(qubits, 2 if reps is None else reps)
    if name == "paper":
        return paper(qubits, 1 if reps is None else reps)
    from qobs.errors import ConfigError

    raise ConfigError(f"unknown ansatz {name!r}; choose one of {', '.join(ANSATZES)}")


# --- Qiskit --------------------------------------------------------------------------------------
def qiskit_circuit(a: Ansatz, measure: bool = True) -> Any:
    """The generator as a Qiskit circuit with a ``ParameterVector`` named θ (bound in index order)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector
    from qiskit.circuit.library import StatePreparation

    theta = ParameterVector("θ", a.num_params)
    qc = QuantumCircuit(a.qubits, name=f"qgan_{a.name}")
    for g in a.gates:
        op = g[0]
        if op == "h":
            qc.h(g[1])
        elif op == "ry":
            qc.ry(theta[g[2]], g[1])
        elif op == "rz":
            qc.rz(theta[g[2]], g[1])
        elif op == "cx":
            qc.cx(g[1], g[2])
        elif op == "cz":
            qc.cz(g[1], g[2])
        elif op == "prep":
            qc.append(StatePreparation(list(g[1])), range(a.qubits))
    if measure:
        qc.measure_all()
    return qc


# --- PennyLane -----------------------------------------------------------------------------------
def pennylane_ops(a: Ansatz, params: Any) -> None:
    """Queue the generator's operations in a PennyLane circuit; ``params`` may be broadcast (B, P)."""
    import pennylane as qml

    wires_msb_first = list(range(a.qubits - 1, -1, -1))
    for g in a.gates:
        op = g[0]
        if op == "h":
            qml.Hadamard(wires=g[1])
        elif op == "ry":
            qml.RY(params[..., g[2]], wires=g[1])
        elif op == "rz":
            qml.RZ(params[..., g[2]], wires=g[1])
        elif op == "cx":
            qml.CNOT(wires=[g[1], g[2]])
        elif op == "cz":
            qml.CZ(wires=[g[1], g[2]])
        elif op == "prep":
            qml.StatePrep(np.array(g[1]), wires=wires_msb_first)


def pennylane_wires(a: Ansatz) -> list[int]:
    """Wires to measure ``probs`` over so that the index is the encoding contract's value."""
    return list(range(a.qubits - 1, -1, -1))


# --- NumPy (exact reference) ---------------------------------------------------------------------
_H = np.array([[1, 1], [1, -1]], dtype=complex) / np.sqrt(2)


def _apply_1q(state: np.ndarray, q: int, n: int, m: np.ndarray) -> np.ndarray:
    b = state.shape[0]
    s = state.reshape(b, 2 ** (n - 1 - q), 2, 2**q)
    if m.ndim == 2:
        return np.einsum("ij,xajc->xaic", m, s).reshape(b, -1)
    return np.einsum("xij,xajc->xaic", m, s).reshape(b, -1)


def statevectors(a: Ansatz, params: np.ndarray) -> np.ndarray:
    """Exact statevectors (B, 2**n) for parameter rows ``params`` (B, P) (or one row)."""
    params = np.atleast_2d(np.asarray(params, dtype=float))
    n, b = a.qubits, params.shape[0]
    idx = np.arange(2**n)
    state = np.zeros((b, 2**n), dtype=complex)
    state[:, 0] = 1.0
    for g in a.gates:
        op = g[0]
        if op == "prep":
            state = np.tile(np.asarray(g[1], dtype=complex), (b, 1))
        elif op == "h":
            state = _apply_1q(state, g[1], n, _H)
        elif op in ("ry", "rz"):
            t = params[:, g[2]] / 2
            c, s = np.cos(t), np.sin(t)
            m = np.zeros((b, 2, 2), dtype=complex)
            if op == "ry":
                m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
            else:
                m[:, 0, 0], m[:, 1, 1] = c - 1j * s, c + 1j * s
            state = _apply_1q(state, g[1], n, m)
        elif op == "cx":
            ctrl, tgt = g[1], g[2]
            perm = np.where((idx >> ctrl) & 1, idx ^ (1 << tgt), idx)
            state = state[:, perm]
        elif op == "cz":
            sign = np.where(((idx >> g[1]) & 1) & ((idx >> g[2]) & 1), -1.0, 1.0)
            state = state * sign
    return state


def probabilities(a: Ansatz, params: np.ndarray) -> np.ndarray:
    """Exact generated distributions (B, 2**n), or (2**n,) for a single parameter vector."""
    p = np.abs(statevectors(a, params)) ** 2
    return p[0] if np.asarray(params).ndim == 1 else p
