"""Patching: lazy import, restoration by identity, idempotence, subclasses, pre-bound transpile."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import qobs

pytest.importorskip("qiskit_aer")

from qiskit import QuantumCircuit
from qiskit.primitives import StatevectorSampler
from qiskit_aer import AerSimulator

from tests.adapters.test_qiskit_jobs import ansatz, total


def _bases() -> list[type]:
    from qiskit.passmanager import BasePassManager
    from qiskit.primitives import BaseEstimatorV2, BaseSamplerV2
    from qiskit.providers import BackendV2

    return [BaseSamplerV2, BaseEstimatorV2, BackendV2, BasePassManager]


def _all_subclasses(base: type) -> set[type]:
    out, stack = set(), [base]
    while stack:
        c = stack.pop()
        if c not in out:
            out.add(c)
            stack.extend(type.__subclasses__(c))
    return out


MISSING = object()


def _snapshot() -> dict[tuple[object, str], object]:
    """Every callable the adapter may patch, as owned by its owner (absent = a sentinel)."""
    import qiskit
    import qiskit.compiler
    import qiskit.compiler.transpiler as ct
    import qiskit.transpiler as tr
    from qiskit.primitives.primitive_job import PrimitiveJob
    from qiskit_aer.jobs import AerJob

    snap: dict[tuple[object, str], object] = {}
    for base in _bases():
        snap[(base, "__init_subclass__")] = base.__dict__.get("__init_subclass__", MISSING)
        for cls in _all_subclasses(base):
            snap[(cls, "run")] = cls.__dict__.get("run", MISSING)
    for cls in (PrimitiveJob, AerJob):
        for name in ("_submit", "result"):
            snap[(cls, name)] = cls.__dict__.get(name, MISSING)
    for mod in (qiskit, qiskit.compiler, ct):
        snap[(mod, "transpile")] = mod.__dict__["transpile"]
    for mod in (qiskit, tr):
        snap[(mod, "generate_preset_pass_manager")] = mod.__dict__["generate_preset_pass_manager"]
    return snap


def test_importing_the_adapter_does_not_import_qiskit():
    code = "import sys, qobs, qobs_qiskit; qobs_qiskit.QiskitAdapter(); assert 'qiskit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_uninstrument_restores_every_patched_callable_by_identity(qobs_run):
    qobs.uninstrument()
    before = _snapshot()
    qobs.instrument()
    sim = AerSimulator(max_parallel_threads=1)
    sim.run(ansatz().assign_parameters([0.1] * 6), shots=5).result()  # job classes get their hooks
    StatevectorSampler().run([ansatz().assign_parameters([0.1] * 6)], shots=5).result()
    during = _snapshot()
    changed = {k for k in before if during.get(k) is not before[k]}
    assert len(changed) >= 10  # really patched: run of many classes, result, transpile, ...
    qobs.uninstrument()
    after = _snapshot()
    bad = [(getattr(k[0], "__name__", k[0]), k[1], before[k], after[k]) for k in before if after[k] is not before[k]]
    assert bad == []


def test_instrumenting_twice_is_harmless(qobs_run):
    from qobs import instrumentation

    n = instrumentation.patch_count()
    qobs.instrument()
    qobs.instrument()
    assert instrumentation.patch_count() == n
    jobs0 = total("qobs_jobs_total")
    StatevectorSampler().run([ansatz().assign_parameters([0.3] * 6)], shots=4).result()
    assert total("qobs_jobs_total") - jobs0 == 1


def test_subclass_defined_after_instrument_observed_once_even_calling_super(qobs_run):
    class MySampler(StatevectorSampler):
        """Like qiskit-machine-learning's samplers: overrides run and calls the parent's."""

        calls = 0

        def run(self, pubs, *, shots=None):
            type(self).calls += 1
            return super().run(pubs, shots=shots)

    class Outer(StatevectorSampler):
        """A primitive built on another primitive: only the outer job is the user's job."""

        def __init__(self):
            super().__init__()
            self.inner = MySampler()

        def run(self, pubs, *, shots=None):
            return self.inner.run(pubs, shots=shots)

    qc = ansatz()
    vals = np.random.default_rng(2).random((3, qc.num_parameters))
    jobs0, circ0, shots0 = total("qobs_jobs_total"), total("qobs_circuits_total"), total("qobs_shots_total")
    MySampler().run([(qc, vals)], shots=50).result()
    Outer().run([(qc, vals)], shots=50).result()
    assert MySampler.calls == 2
    assert total("qobs_jobs_total") - jobs0 == 2
    assert total("qobs_circuits_total") - circ0 == 6
    assert total("qobs_shots_total") - shots0 == 300


def test_transpile_bound_before_instrument_still_observed_and_pass_managers(qobs_run):
    from qiskit import generate_preset_pass_manager
    from qiskit import transpile as early  # bound to whatever qiskit.transpile is now

    qobs.uninstrument()
    from qiskit import transpile as plain_transpile

    qobs.instrument()
    sim = AerSimulator(max_parallel_threads=1)
    qc = ansatz()
    n0 = total("qobs_transpile_duration_seconds_count")
    aer0 = total("qobs_transpile_duration_seconds_count", backend="aer_simulator")
    plain_transpile(qc, sim)
    assert total("qobs_transpile_duration_seconds_count") - n0 == 1  # through the preset pass manager's run
    early(qc, sim)
    assert total("qobs_transpile_duration_seconds_count") - n0 == 2
    pm = generate_preset_pass_manager(optimization_level=1, backend=sim)
    pm.run([qc, qc])
    assert total("qobs_transpile_duration_seconds_count", backend="aer_simulator") - aer0 == 3
    # qiskit's own small pass managers (gate.control, ...) are not transpilation
    QuantumCircuit(3).compose(QuantumCircuit(1).to_gate().control(2), inplace=False)
    assert total("qobs_transpile_duration_seconds_count") - n0 == 3
