"""The instrumented sample run behind ``qobs demo`` until the reference QGAN takes its place.

Trains a 4-qubit parameterised circuit with SPSA on Aer's ``SamplerV2``, written as any Qiskit user
would write it; qobs observes it through ``qobs.instrument()`` only.
"""

from __future__ import annotations

import time

import click


def run(store: str | None, jobs: int, shots: int, seed: int) -> None:
    import qobs

    if store:
        qobs.configure(store=store)
    qobs.instrument()
    qobs.annotate_run(seed=seed, name="demo")

    import numpy as np
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit.library import efficient_su2
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    rng = np.random.default_rng(seed)
    backend = AerSimulator(seed_simulator=seed, max_parallel_threads=1)
    ansatz = efficient_su2(4, reps=2)
    circuit = QuantumCircuit(4)
    circuit.compose(ansatz, inplace=True)
    circuit.measure_all()
    circuit = transpile(circuit, backend, seed_transpiler=seed)
    sampler = SamplerV2(seed=seed, options={"backend_options": {"max_parallel_threads": 1}})
    theta = rng.uniform(0, np.pi, ansatz.num_parameters)

    def loss(params: np.ndarray) -> float:  # probability of not measuring 0000
        counts = sampler.run([(circuit, params)], shots=shots).result()[0].data.meas.get_counts()
        return 1.0 - counts.get("0000", 0) / shots

    t0 = time.perf_counter()
    for step in range(jobs // 2):
        delta = rng.choice([-1.0, 1.0], size=theta.shape)
        grad = (loss(theta + 0.1 * delta) - loss(theta - 0.1 * delta)) / 0.2 * delta
        theta -= 0.3 * grad
        click.echo(f"\rstep {step + 1}/{jobs // 2}", nl=False)
    click.echo(f"\rtrained {jobs // 2} steps in {time.perf_counter() - t0:.1f} s; final loss {loss(theta):.3f}")
    from qobs import runtime

    rt = runtime.current()
    run_id = rt.run_id if rt else None
    path = rt.settings.store if rt else None
    qobs.shutdown()
    if run_id and path:
        from qobs.cli import _format_run
        from qobs.store import connect, resolve_run, run_summary

        conn = connect(path, create=False)
        click.echo(_format_run(resolve_run(conn, run_id), run_summary(conn, run_id)))
        click.echo(f"\nstored in {path}; see `qobs runs show {run_id}`")
