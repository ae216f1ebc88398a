"""Targets, metrics (golden test against the paper's hardware-trained generator) and both SDKs' encodings."""

from __future__ import annotations

import numpy as np
import pytest

from reference_qgan import ansatz, backends, metrics, targets

PAPER_PARAMS = [0.29399714, 0.38853322, 0.9557694, 0.07245791, 6.02626428, 0.13537225]


def test_targets_are_normalised_distributions():
    for name in targets.TARGETS:
        q = targets.target(name)
        assert q.shape == (8,) and np.all(q > 0) and q.sum() == pytest.approx(1.0)
    q = targets.lognormal()
    assert int(np.argmax(q)) == 1 and metrics.kl(np.full(8, 1 / 8), q) == pytest.approx(0.21, abs=0.01)
    assert int(np.argmax(targets.triangular())) == 2
    bi = targets.bimodal()
    assert bi[0] > bi[2] < bi[3] and int(np.argmax(bi)) == 3


def test_golden_paper_generator_scores_ks_0061_kl_0039():
    """Zoufal et al.'s IBM-trained parameters, TwoLocal(3, ry, cz, circular, reps=1) on a discretised normal."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import StatePreparation, n_local
    from qiskit.quantum_info import Statevector

    q = targets.lognormal()
    ref = QuantumCircuit(3)
    ref.append(StatePreparation(np.sqrt(targets.discretised_normal()).tolist()), range(3))
    ref.compose(n_local(3, "ry", "cz", entanglement="circular", reps=1), inplace=True)
    p_qiskit = Statevector(ref.assign_parameters(PAPER_PARAMS)).probabilities()  # index = bitstring value
    assert metrics.ks(p_qiskit, q) == pytest.approx(0.061, abs=0.001)
    assert metrics.kl(p_qiskit, q) == pytest.approx(0.039, abs=0.001)
    p_ours = ansatz.probabilities(ansatz.paper(), np.array(PAPER_PARAMS))
    np.testing.assert_allclose(p_ours, p_qiskit, atol=1e-12)


def test_metric_values():
    p, q = np.array([0.5, 0.5, 0, 0]), np.array([0.25] * 4)
    assert metrics.kl(p, q) == pytest.approx(np.log(2))
    assert metrics.tvd(p, q) == pytest.approx(0.5)
    assert metrics.ks(p, q) == pytest.approx(0.5)
    assert metrics.w1(p, q) == pytest.approx(0.25 + 0.5 + 0.25)
    assert metrics.entropy_bits(q) == pytest.approx(2.0) and metrics.entropy_bits([1, 0]) == 0
    assert 0 < metrics.js(p, q) < np.log(2)
    assert metrics.shot_noise(q, 100) == pytest.approx(np.sqrt(0.25 * 0.75 / 100)) and metrics.shot_noise(q, None) == 0


@pytest.mark.parametrize("name", ["efficient_su2", "paper"])
def test_both_sdks_give_identical_exact_distributions(name):
    a = ansatz.make(name)
    assert a.num_params == (18 if name == "efficient_su2" else 6)
    params = np.random.default_rng(3).uniform(-np.pi, np.pi, (4, a.num_params))
    ref = ansatz.probabilities(a, params)
    qk = backends.make("qiskit", None, a, None, 0).distributions(params)
    pl = backends.make("pennylane", "default.qubit", a, None, 0).distributions(params)
    np.testing.assert_allclose(qk, ref, atol=1e-10)
    np.testing.assert_allclose(pl, ref, atol=1e-10)


def test_bitstring_to_value_mapping_is_explicit():
    """Value 1 means qubit 0 measured 1: Qiskit bitstring '001', PennyLane wire 0."""
    import pennylane as qml
    from qiskit import QuantumCircuit
    from qiskit_aer.primitives import SamplerV2

    qc = QuantumCircuit(3)
    qc.x(0)
    qc.measure_all()
    bits = SamplerV2(seed=1).run([qc], shots=10).result()[0].data.meas
    assert bits.get_counts() == {"001": 10}
    assert backends._counts_to_probs(bits[None] if bits.ndim == 0 else bits, 8)[0][1] == 1.0

    @qml.qnode(qml.device("default.qubit", wires=3))
    def circ():
        qml.PauliX(0)
        return qml.probs(wires=ansatz.pennylane_wires(ansatz.efficient_su2()))

    assert int(np.argmax(circ())) == 1


def test_shot_backends_agree_with_exact_within_noise():
    a = ansatz.efficient_su2()
    params = np.random.default_rng(5).uniform(-1, 1, (3, a.num_params))
    ref = ansatz.probabilities(a, params)
    for sdk, name in (("qiskit", "aer"), ("qiskit", "statevector"), ("pennylane", "default.qubit"),
                      ("pennylane", "lightning.qubit")):
        est = backends.make(sdk, name, a, 20_000, 1).distributions(params)
        assert est.shape == (3, 8) and np.allclose(est.sum(axis=1), 1.0)
        assert np.abs(est - ref).max() < 0.02, (sdk, name)
