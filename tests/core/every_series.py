"""Real instrumented traffic that touches every series of the SLI contract, then writes the exposition.

Run as ``python every_series.py OUT``: a simulated remote QPU (queue, cost, calibration, fidelity checks
with ``QOBS_FIDELITY_SAMPLE=1`` and a baseline of two), Aer primitives (sampler, analytic estimator, a job refused at
submission), a transpile, an unpriced backend, shot and money budgets, training steps over more models
than the label limit (``QOBS_LABEL_LIMIT``) and one failing job listener (a contained internal error).
Writes prometheus_client's default registry in the text format to OUT.
"""

from __future__ import annotations

import sys


def main(out: str) -> None:
    import qobs
    import qobs.training
    from qobs import telemetry

    qobs.instrument()
    qobs.budget("every-series", shots=10_000_000, usd=1000, period="month")

    def broken_listener(_record: object) -> None:
        raise RuntimeError("a listener bug: contained, counted, never seen by the user")

    telemetry.add_job_listener(broken_listener)

    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter
    from qiskit.primitives import StatevectorEstimator
    from qiskit.providers.basic_provider import BasicSimulator
    from qiskit.quantum_info import SparsePauliOp
    from qiskit_aer.primitives import SamplerV2

    from qobs.sim import SimulatedQPU

    class LabQPU(BasicSimulator):
        """A backend with no price in the catalog."""

        def __init__(self) -> None:
            super().__init__()
            self.name = "lab_qpu"

    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    qpu = SimulatedQPU("sim_manila", seed=5, queue_mean_s=0.02, calibration_age_s=600, time_scale=1.0)
    for _ in range(3):
        qpu.run(transpile(bell, qpu), shots=256).result()
    LabQPU().run(bell, shots=64).result()

    theta = Parameter("theta")
    ansatz = QuantumCircuit(2)
    ansatz.ry(theta, 0)
    ansatz.cx(0, 1)
    ansatz.measure_all()
    sampler = SamplerV2(options={"backend_options": {"max_parallel_threads": 1}})
    sampler.run([(ansatz, [[0.1], [0.2]])], shots=128).result()
    try:
        sampler.run([ansatz], shots=8).result()  # unbound parameter: refused at submission
    except Exception:  # noqa: BLE001 - the refusal is the point
        pass
    plain = QuantumCircuit(2)
    plain.h(0)
    plain.cx(0, 1)
    StatevectorEstimator().run([(plain, SparsePauliOp("ZZ"))]).result()  # analytic: zero shots

    for i, model in enumerate(["qgan-a", "qgan-b", "qgan-c", "qgan-d", "qgan-e"]):
        with qobs.training.step(model=model, step=i) as s:
            with s.generator():
                sampler.run([(ansatz, [[0.3]])], shots=64).result()
            s.record(g_loss=0.7, d_loss=0.69, grad=[0.2, -0.1], grad_std=[0.05, 0.05],
                     divergences={"kl": 0.1, "js": 0.05, "ks": 0.1, "tvd": 0.1, "w1": 0.2}, entropy=2.5,
                     shot_noise=0.02, samples=64)
    qobs.flush()
    from qobs import fidelity

    fidelity.flush()  # the simulated QPU's checks (its baseline needs QOBS_FIDELITY_BASELINE_CHECKS of them)

    from prometheus_client import REGISTRY, generate_latest

    with open(out, "wb") as f:
        f.write(generate_latest(REGISTRY))


if __name__ == "__main__":
    main(sys.argv[1])
