"""A plain training script, unmodified, under ``qobs run``: the store and the Prometheus exposition
show the totals the script counts itself. Optionally repeated with an old qiskit (1.x) interpreter."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("qiskit_aer")
from tests.conftest import _missing, clean_env, compat_python

# Knows nothing of qobs. Trains a 2-qubit circuit with parameter-shift gradients from its own loop,
# through SamplerV2 and backend.run, and prints its own ground truth; optionally scrapes a URL.
SCRIPT = r'''
import json, sys, urllib.request
import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector
from qiskit_aer import AerSimulator
from qiskit_aer.primitives import SamplerV2

theta = ParameterVector("t", 2)
qc = QuantumCircuit(2)
qc.ry(theta[0], 0); qc.cx(0, 1); qc.ry(theta[1], 1); qc.measure_all()
sim = AerSimulator(max_parallel_threads=1, seed_simulator=1)
sampler = SamplerV2(seed=1, options={"backend_options": {"max_parallel_threads": 1}})
tqc = transpile(qc, sim)
params = np.array([0.3, 1.2])
jobs = circuits = shots = 0

def p00(counts):
    return counts.get("00", 0) / max(sum(counts.values()), 1)

for step in range(6):
    shifts = [params + s * np.pi / 2 * np.eye(2)[i] for i in range(2) for s in (1, -1)]
    res = sampler.run([(qc, np.array(shifts))], shots=256).result()
    jobs += 1; circuits += len(shifts)
    counts = [res[0].data.meas.get_counts(loc=k) for k in range(len(shifts))]
    shots += sum(sum(c.values()) for c in counts)
    grad = np.array([(p00(counts[2 * i]) - p00(counts[2 * i + 1])) / 2 for i in range(2)])
    params = params + 0.4 * grad
    check = sim.run(tqc.assign_parameters(params), shots=100).result().get_counts()
    jobs += 1; circuits += 1; shots += sum(check.values())

out = {"jobs": jobs, "circuits": circuits, "shots": shots}
if len(sys.argv) > 1:
    out["exposition"] = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
print("TRUTH " + json.dumps(out))
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _qobs_cmd() -> list[str]:
    exe = shutil.which("qobs")
    return [exe] if exe else [sys.executable, "-m", "qobs.cli"]


def _run(tmp_path: Path, python: str, *, port: int | None = None) -> tuple[dict, dict]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    store = tmp_path / "runs.db"
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"
    args = [str(script)]
    if port is not None:
        env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_PORT=str(port))
        args.append(f"http://127.0.0.1:{port}/metrics")
    proc = subprocess.run([*_qobs_cmd(), "run", "--store", str(store), "--", python, *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("TRUTH "))
    truth = json.loads(line.removeprefix("TRUTH "))
    shown = subprocess.run([*_qobs_cmd(), "runs", "show", "latest", "--store", str(store), "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    return truth, json.loads(shown.stdout)


def test_plain_training_script_under_qobs_run_shows_its_own_totals(tmp_path):
    truth, shown = _run(tmp_path, sys.executable, port=_free_port())
    totals = shown["totals"]
    assert (totals["jobs"], totals["circuits"], totals["shots"]) == (truth["jobs"], truth["circuits"], truth["shots"])
    assert (totals["errors"], totals["cancelled"]) == (0, 0)
    assert shown["run"]["status"] == "finished"
    assert set(shown["backends"]) == {"aer_simulator"}

    from prometheus_client.parser import text_string_to_metric_families

    jobs = shots = circuits = 0.0
    for fam in text_string_to_metric_families(truth["exposition"]):
        for s in fam.samples:
            if s.name == "qobs_jobs_total":
                jobs += s.value
            elif s.name == "qobs_shots_total":
                shots += s.value
            elif s.name == "qobs_circuits_total":
                circuits += s.value
    assert (jobs, circuits, shots) == (truth["jobs"], truth["circuits"], truth["shots"])


@pytest.mark.slow
def test_oldest_supported_qiskit_runs_the_same_script(tmp_path):
    """QOBS_QISKIT_COMPAT_PYTHON: a Python with qiskit 1.x, qiskit-aer and qobs (--no-deps); `./dev test` makes it."""
    python = compat_python("QOBS_QISKIT_COMPAT_PYTHON")
    version = subprocess.run([python, "-c", "import qiskit; print(qiskit.__version__)"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version.startswith("1."), f"{python} has qiskit {version}, not 1.x"
    truth, shown = _run(tmp_path, python)
    totals = shown["totals"]
    assert (totals["jobs"], totals["circuits"], totals["shots"]) == (truth["jobs"], truth["circuits"], truth["shots"])
    assert shown["run"]["qiskit"] == version


IBM_SCRIPT = """
import json, warnings
warnings.filterwarnings("ignore")
from qiskit import QuantumCircuit, transpile
from qiskit_ibm_runtime import SamplerV2, __version__
from qiskit_ibm_runtime.fake_provider import FakeManilaV2
fake = FakeManilaV2()
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
isa = transpile(qc, fake, seed_transpiler=1)
job = SamplerV2(mode=fake).run([isa, isa], shots=64)
res = job.result()
shots = sum(sum(r.data.meas.get_counts().values()) for r in res)
print("TRUTH " + json.dumps({"version": __version__, "shots": shots, "job_id": job.job_id(), "depth": isa.depth()}))
"""


@pytest.mark.slow
def test_oldest_supported_ibm_runtime_local_mode_is_one_job(tmp_path):
    """pyproject claims qiskit-ibm-runtime >= 0.34: its local (fake-backend) mode on the oldest qiskit we claim,
    unmodified under qobs run, is one sampler job with the shots, circuits, depth and job id it reports."""
    import sqlite3

    python = compat_python("QOBS_QISKIT_COMPAT_PYTHON")
    found = subprocess.run([python, "-c", "import qiskit_ibm_runtime as r; print(r.__version__)"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        _missing("qiskit-ibm-runtime 0.34 in QOBS_QISKIT_COMPAT_PYTHON", "./dev test installs it")
    assert found.stdout.strip().startswith("0.34."), found.stdout
    script = tmp_path / "ibm_job.py"
    script.write_text(IBM_SCRIPT)
    store = tmp_path / "runs.db"
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([*_qobs_cmd(), "run", "--store", str(store), "--", python, str(script)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("TRUTH ")).removeprefix("TRUTH "))
    rows = sqlite3.connect(store).execute(
        "SELECT backend, provider, operation, circuits, shots, depth, job_id, status FROM jobs").fetchall()
    assert rows == [("fake_manila", "ibm", "sampler", 2, truth["shots"], truth["depth"], truth["job_id"], "ok")]
    assert truth["shots"] == 128
