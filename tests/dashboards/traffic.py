"""Real instrumented traffic for the dashboard tests: Qiskit Aer jobs and training steps under ``qobs.instrument()``.

Every fourth step also submits two bad jobs (unbound parameters): ``backend.run`` fails at result (a job
error), ``SamplerV2.run`` is refused at submission (a validation submission error), so the error panels
see real failures; and five jobs that a ``block`` budget refuses (status ``blocked``: not failures).

Run as a subprocess with ``OTEL_METRICS_EXPORTER=prometheus OTEL_EXPORTER_PROMETHEUS_PORT=<port>``;
prints ``ready`` once the first jobs are recorded, then keeps submitting until killed (or orphaned).
"""

from __future__ import annotations

import math
import os
import sys
import time


def main() -> None:
    import qobs
    import qobs.training

    qobs.instrument()
    try:  # budget gauges (the budgets feature may be absent in an older tree: the test does not require them)
        qobs.budget("dashboards-test", shots=10_000_000, usd=1000, period="rolling:1d")
        # Every job of this model is blocked: policy, which the success and burn panels must leave out.
        qobs.budget("dashboards-block", shots=1, period="rolling:1d", scope={"model": "dash-blocked"}, mode="block")
    except Exception as exc:  # noqa: BLE001
        print(f"no budget: {exc!r}", file=sys.stderr)

    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    sim = AerSimulator(max_parallel_threads=1)
    sampler = SamplerV2(options={"backend_options": {"max_parallel_threads": 1}})
    theta = Parameter("theta")
    ansatz = QuantumCircuit(3)
    ansatz.ry(theta, 0)
    ansatz.cx(0, 1)
    ansatz.cx(1, 2)
    ansatz.measure_all()
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    bell_isa = transpile(bell, sim)
    unbound = QuantumCircuit(1)
    unbound.rx(Parameter("free"), 0)
    unbound.measure_all()

    parent, step = os.getppid(), 0
    while os.getppid() == parent:
        with qobs.training.step(model="dash-qgan", step=step) as s:
            with s.generator():
                sampler.run([(ansatz, [[0.1 * step], [0.1 * step + 0.05]])], shots=256).result()
            with s.discriminator():
                sim.run(bell_isa, shots=128).result()
            kl = 1.0 / (1 + step)
            s.record(g_loss=0.7 + 0.1 * math.sin(step), d_loss=0.69, grad=[0.2, -0.1, 0.05],
                     grad_std=[0.05, 0.05, 0.05], divergences={"kl": kl, "js": kl / 2},
                     entropy=2.5, shot_noise=0.02, samples=256)
        if step % 4 == 0:
            for bad in (lambda: sim.run(unbound, shots=8).result(), lambda: sampler.run([unbound], shots=8).result()):
                try:
                    bad()
                except Exception:  # noqa: BLE001 - the failure is the point
                    pass
            with qobs.training.step(model="dash-blocked", step=step):
                for _ in range(5):  # more blocked jobs than failed ones: counted as errors, they would show
                    try:
                        sim.run(bell_isa, shots=8).result()
                    except Exception:  # noqa: BLE001 - the budget refuses it
                        pass
        if step == 0:
            print("ready", flush=True)
        step += 1
        time.sleep(0.1)


if __name__ == "__main__":
    main()
