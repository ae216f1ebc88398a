"""A plain PennyLane training script, unmodified, under ``qobs run``: the run store and the
Prometheus exposition show the totals the script counted itself with ``qml.Tracker``."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import clean_env

pytest.importorskip("pennylane")

SCRIPT = textwrap.dedent('''
    import functools, json, os, sys, urllib.request

    import pennylane as qml
    from pennylane import numpy as np

    dev = qml.device("default.qubit", wires=3, seed=7)

    @qml.qnode(dev, diff_method="parameter-shift")
    def circuit(w):
        for i in range(3):
            qml.RY(w[i], wires=i)
        qml.CNOT(wires=[0, 1])
        qml.CNOT(wires=[1, 2])
        return qml.expval(qml.PauliZ(2))

    if hasattr(qml, "set_shots"):  # PennyLane >= 0.42
        circuit = qml.set_shots(circuit, shots=100)
    else:
        circuit = functools.partial(circuit, shots=100)

    w = np.array([0.3, 0.2, 0.1], requires_grad=True)
    opt = qml.GradientDescentOptimizer(stepsize=0.1)
    with qml.Tracker(dev) as tracker:
        for step in range(4):
            w = opt.step(circuit, w)
        final = circuit(w)
    port = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT")
    exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    print(json.dumps({"batches": tracker.totals["batches"], "executions": tracker.totals["executions"],
                      "shots": tracker.totals["shots"], "exposition": exposition}))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(exposition: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


@pytest.mark.slow
def test_unmodified_training_script_under_qobs_run(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    store = tmp_path / "runs.db"
    env = clean_env()
    env.update(OTEL_METRICS_EXPORTER="prometheus", OTEL_EXPORTER_PROMETHEUS_PORT=str(_free_port()),
               OMP_NUM_THREADS="1")
    qobs_cli = [sys.executable, "-c", "from qobs.cli import main; main()"]
    proc = subprocess.run([*qobs_cli, "run", "--store", str(store), "--", sys.executable, str(script)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    own = json.loads(proc.stdout.strip().splitlines()[-1])
    # Independent figures: 4 steps x (1 forward + 2P=6 shifted tapes) + 1 final forward, 100 shots each.
    assert own["executions"] == 4 * 7 + 1 and own["shots"] == 100 * own["executions"]

    show = subprocess.run([*qobs_cli, "runs", "show", "latest", "--store", str(store), "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert show.returncode == 0, show.stderr
    summary = json.loads(show.stdout)
    totals = summary["totals"]
    assert (totals["jobs"], totals["circuits"], totals["shots"], totals["errors"]) == (
        own["batches"], own["executions"], own["shots"], 0)
    assert summary["backends"]["default.qubit"]["provider"] == "pennylane"

    exp = own["exposition"]
    labels = {"backend": "default.qubit", "provider": "pennylane"}
    assert _sample(exp, "qobs_jobs_total", **labels, operation="device_execute", status="ok") == own["batches"]
    assert _sample(exp, "qobs_circuits_total", **labels, operation="device_execute") == own["executions"]
    assert _sample(exp, "qobs_shots_total", **labels) == own["shots"]
    assert _sample(exp, "qobs_shots_total", **labels, purpose="forward") == 100 * 5
    assert _sample(exp, "qobs_shots_total", **labels, purpose="gradient") == 100 * 4 * 6
    assert _sample(exp, "qobs_circuit_depth_count", backend="default.qubit") == own["executions"]
