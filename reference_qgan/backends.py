"""Where the generator runs: Qiskit primitives or PennyLane devices, used the way users use them.

Every backend answers one question per training step: the generated distributions for a batch
of parameter rows (the current parameters and their parameter-shift neighbours), in ONE primitive
call (Qiskit: one ``SamplerV2.run`` with one pub holding the whole parameter array) or ONE device
batch (PennyLane: one broadcast QNode call). qobs's adapters observe those calls; nothing here
talks to qobs.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from reference_qgan import ansatz as ans

QISKIT_BACKENDS = ("aer", "statevector", "sim")
PENNYLANE_DEVICES = ("default.qubit", "lightning.qubit")


class GeneratorBackend:
    """Base: ``distributions(params (B, P)) -> (B, 2**n)`` estimated (or exact) probabilities."""

    sdk = ""
    name = ""
    provider = ""
    simulated_remote = False

    def __init__(self, a: ans.Ansatz, shots: int | None, seed: int) -> None:
        self.ansatz = a
        self.shots = shots
        self.seed = seed
        self.calls = 0

    def distributions(self, params: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"sdk": self.sdk, "backend": self.name, "shots": self.shots,
                "simulated_remote": self.simulated_remote}


def _counts_to_probs(bitarray: Any, bins: int) -> np.ndarray:
    """Per-binding histograms from a Qiskit ``BitArray`` of shape (B,), by integer value of the bitstring."""
    arr = np.asarray(bitarray.array)          # (B, shots, bytes), big-endian bytes of the bitstring
    vals = np.zeros(arr.shape[:-1], dtype=np.int64)
    for byte in range(arr.shape[-1]):
        vals = (vals << 8) | arr[..., byte]
    b = vals.shape[0]
    flat = vals + bins * np.arange(b)[:, None]
    counts = np.bincount(flat.ravel(), minlength=b * bins).reshape(b, bins)
    return counts / vals.shape[1]


class QiskitSampler(GeneratorBackend):
    """Qiskit: Aer ``SamplerV2``, ``StatevectorSampler``, or any ``BackendV2`` through ``BackendSamplerV2``.

    Any other ``BackendV2`` (qobs's simulated remote QPU, fake or real devices) gets one
    ``backend.run`` job per step holding every bound circuit, read through ``get_counts`` (some
    backends return no per-shot memory, which ``BackendSamplerV2`` needs). Exact mode
    (``shots=None``) uses ``StatevectorEstimator`` with the bins' projectors as observables: one
    call returns every binding's exact distribution.
    """

    sdk = "qiskit"

    def __init__(self, a: ans.Ansatz, shots: int | None, seed: int, backend: str | Any = "aer") -> None:
        super().__init__(a, shots, seed)
        from qiskit import transpile

        self._rng = np.random.default_rng(seed)
        self.circuit = ans.qiskit_circuit(a, measure=shots is not None)
        self.provider = "qiskit"
        if shots is None:
            from qiskit.primitives import StatevectorEstimator
            from qiskit.quantum_info import SparsePauliOp

            self.name = "statevector_estimator"
            self.primitive = StatevectorEstimator(seed=seed)
            bins = 2**a.qubits
            # |k><k| = prod_i (I + (-1)^{b_i} Z_i) / 2, as Pauli sums (qubit 0 is the rightmost label).
            obs = []
            for k in range(bins):
                op = SparsePauliOp("I" * a.qubits)
                for i in range(a.qubits):
                    z = ["I"] * a.qubits
                    z[a.qubits - 1 - i] = "Z"
                    sign = -1.0 if (k >> i) & 1 else 1.0
                    op = op.compose(SparsePauliOp(["I" * a.qubits, "".join(z)], [0.5, 0.5 * sign]))
                obs.append([op.simplify()])
            self._observables = obs  # shape (bins, 1): broadcasts against (B,) parameter rows
            self._isa = self.circuit
            return
        if isinstance(backend, str) and backend == "aer":
            from qiskit_aer import AerSimulator
            from qiskit_aer.primitives import SamplerV2

            self.name, self.provider = "aer_simulator", "aer"
            sim = AerSimulator(max_parallel_threads=1)
            self._isa = transpile(self.circuit, sim, optimization_level=1, seed_transpiler=seed)
            self.primitive = SamplerV2(options={"backend_options": {"max_parallel_threads": 1},
                                                "run_options": {"seed_simulator": seed}})
        elif isinstance(backend, str) and backend == "statevector":
            from qiskit.primitives import StatevectorSampler

            self.name = "statevector_sampler"
            self._isa = self.circuit.decompose(reps=3) if a.gates and a.gates[0][0] == "prep" else self.circuit
            self.primitive = StatevectorSampler(seed=self._rng)  # a Generator: advances call to call
        else:
            obj = _qiskit_backend_object(backend, seed) if isinstance(backend, str) else backend
            self.name = getattr(obj, "name", type(obj).__name__)
            self.provider = getattr(obj, "provider_name", None) or "qiskit"
            self.simulated_remote = type(obj).__module__.startswith("qobs.sim")
            self._isa = transpile(self.circuit, obj, optimization_level=1, seed_transpiler=seed)
            self.backend_obj = obj
            self.primitive = None  # BackendV2.run: one job holding every bound circuit, read by counts

    def distributions(self, params: np.ndarray) -> np.ndarray:
        self.calls += 1
        bins = 2**self.ansatz.qubits
        if self.shots is None:
            res = self.primitive.run([(self._isa, self._observables, params)]).result()[0]
            return np.clip(np.asarray(res.data.evs, float).T, 0.0, None)  # (bins, B) -> (B, bins)
        if self.primitive is None:
            return self._run_backend(params, bins)
        self._advance_seed()
        res = self.primitive.run([(self._isa, params)], shots=self.shots).result()[0]
        data = res.data
        bitarray = getattr(data, "meas", None) or next(iter(data.values()))
        return _counts_to_probs(bitarray, bins)

    def _run_backend(self, params: np.ndarray, bins: int) -> np.ndarray:
        circuits = [self._isa.assign_parameters(row) for row in params]
        result = self.backend_obj.run(circuits, shots=self.shots,
                                      seed_simulator=int(self._rng.integers(2**31))).result()
        out = np.zeros((len(circuits), bins))
        for i in range(len(circuits)):
            for key, n in result.get_counts(i).items():
                out[i, int(key.replace(" ", ""), 2) % bins] += n
        return out / out.sum(axis=1, keepdims=True)

    def _advance_seed(self) -> None:
        """New simulator seed per call, drawn from the run's seeded stream (same seed, same run)."""
        opts = getattr(self.primitive, "options", None)
        seed = int(self._rng.integers(2**31))
        run_options = getattr(opts, "run_options", None)
        if isinstance(run_options, dict):
            run_options["seed_simulator"] = seed
        elif opts is not None and hasattr(opts, "seed_simulator"):
            opts.seed_simulator = seed


def _qiskit_backend_object(name: str, seed: int) -> Any:
    """A BackendV2 by name: ``sim`` (qobs's simulated remote QPU) or a fake backend (``fake_manila``)."""
    from qobs.errors import ConfigError

    if name == "sim":
        if importlib.util.find_spec("qobs.sim") is None:
            raise ConfigError("the simulated remote QPU (qobs.sim) is not installed in this build")
        from qobs import sim  # type: ignore[attr-defined]

        factory = getattr(sim, "backend", None) or getattr(sim, "SimulatedQPU", None)
        if factory is None:
            raise ConfigError("qobs.sim provides no backend factory")
        try:
            return factory(seed=seed)
        except TypeError:
            return factory()
    if name.startswith("fake_"):
        try:
            from qiskit_ibm_runtime import fake_provider
        except ImportError as exc:
            raise ConfigError(f"backend {name!r} needs qiskit-ibm-runtime (pip install 'qobs[ibm]')") from exc
        cls = getattr(fake_provider, "Fake" + "".join(p.capitalize() for p in name[5:].split("_")) + "V2", None)
        if cls is None:
            raise ConfigError(f"unknown fake backend {name!r}")
        return cls()
    raise ConfigError(f"unknown Qiskit backend {name!r}; use aer, statevector, sim, fake_<name> or pass a BackendV2")


class PennyLaneDevice(GeneratorBackend):
    """PennyLane: a broadcast QNode returning ``probs`` (one device batch per call); any device by name."""

    sdk = "pennylane"
    provider = "pennylane"

    def __init__(self, a: ans.Ansatz, shots: int | None, seed: int, device: str | Any = "default.qubit") -> None:
        super().__init__(a, shots, seed)
        import pennylane as qml

        from qobs.errors import ConfigError

        if isinstance(device, str):
            try:
                try:
                    self.device = qml.device(device, wires=a.qubits, seed=seed)
                except TypeError:
                    self.device = qml.device(device, wires=a.qubits)
            except Exception as exc:
                if type(exc).__name__ != "DeviceError":  # pennylane.exceptions (0.45) or pennylane (0.40)
                    raise
                raise ConfigError(f"PennyLane device {device!r}: {exc}") from None  # unknown or not loadable
        else:
            self.device = device
        self.name = getattr(self.device, "name", None) or str(device)
        wires = ans.pennylane_wires(a)

        def generator(params: Any) -> Any:
            ans.pennylane_ops(a, params)
            return qml.probs(wires=wires)

        self.qnode = qml.QNode(generator, self.device, diff_method=None, shots=shots)

    def distributions(self, params: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = np.asarray(self.qnode(np.asarray(params, float)), float)
        return np.atleast_2d(out)


class NumpyExact(GeneratorBackend):
    """In-process reference: exact distributions, or multinomial samples of them (no SDK, not observed).

    For tuning and as the exact evaluator; the product paths are the Qiskit and PennyLane backends.
    """

    sdk = "numpy"
    name = "numpy"
    provider = "reference_qgan"

    def __init__(self, a: ans.Ansatz, shots: int | None, seed: int) -> None:
        super().__init__(a, shots, seed)
        self._rng = np.random.default_rng(seed)

    def distributions(self, params: np.ndarray) -> np.ndarray:
        self.calls += 1
        p = np.clip(ans.probabilities(self.ansatz, np.atleast_2d(params)), 0.0, None)
        p /= p.sum(axis=1, keepdims=True)
        if self.shots is None:
            return p
        return self._rng.multinomial(self.shots, p) / self.shots


def make(sdk: str, backend: str | Any | None, a: ans.Ansatz, shots: int | None, seed: int) -> GeneratorBackend:
    """A generator backend by SDK and name (or a ready backend/device object)."""
    from qobs.errors import ConfigError

    if sdk == "qiskit":
        return QiskitSampler(a, shots, seed, backend or "aer")
    if sdk == "pennylane":
        return PennyLaneDevice(a, shots, seed, backend or "default.qubit")
    if sdk == "numpy":
        return NumpyExact(a, shots, seed)
    raise ConfigError(f"unknown SDK {sdk!r}; use qiskit or pennylane")


def sim_available() -> bool:
    """True when qobs's simulated remote QPU is installed."""
    return importlib.util.find_spec("qobs.sim") is not None
