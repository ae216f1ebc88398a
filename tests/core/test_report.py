"""``qobs report``: the postmortem of a real instrumented run agrees with what the run itself saw."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import clean_env

QOBS = [sys.executable, "-m", "qobs.cli"]

# Knows nothing of qobs: a simulated remote QPU that fails a third of its jobs and drifts, a shot budget,
# a refused submission, and training steps. Prints its own ground truth as JSON.
PROGRAM = textwrap.dedent("""
    import json
    import qobs, qobs.training
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter
    from qiskit_aer.primitives import SamplerV2
    from qobs.sim import SimulatedQPU

    qobs.budget("tiny", shots=3000, period="month")
    qpu = SimulatedQPU("sim_manila", seed=2, failure_rate=0.3, drift_every_jobs=3, time_scale=0.0)
    qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
    isa = transpile(qc, qpu)
    failed = shots = 0
    for i in range(8):
        with qobs.training.step(model="m", step=i) as s:
            try:
                shots += sum(qpu.run(isa, shots=256).result().get_counts().values())
            except Exception:
                failed += 1
            s.record(grad=[0.01, 0.02], grad_std=[0.1, 0.1], divergences={"kl": 1 / (i + 1)}, samples=256)
    u = QuantumCircuit(1); u.rx(Parameter("t"), 0); u.measure_all()
    try:
        SamplerV2().run([u]).result()
    except ValueError:
        pass
    print(json.dumps({"failed": failed, "shots": shots, "drift_steps": qpu.drift_step}))
""")


def test_report_of_a_run_with_failures_drift_and_budget(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    store = tmp_path / "runs.db"
    env = clean_env()
    env.update(QOBS_STORE=str(store), OMP_NUM_THREADS="1")
    proc = subprocess.run([*QOBS, "run", "--", sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    truth = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 < truth["failed"] < 8  # the seed gives both outcomes: the report has something to find
    out = subprocess.run([*QOBS, "report", "--json"], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    errors = {(e["backend"], e["error_type"], e["submission_reason"]): e["jobs"] for e in r["errors"]}
    assert errors == {("sim_manila", "JobError", None): truth["failed"],
                      ("aer_simulator", "ValueError", "validation"): 1}
    assert r["cost"]["shots"] == truth["shots"]
    assert r["cost"]["samples"] == 8 * 256
    findings = "\n".join(r["findings"])
    assert f"sim_manila: {truth['failed']} of 8 jobs failed" in findings
    assert "1 submission refused (validation)" in findings
    assert f"calibration changed {truth['drift_steps']} times" in findings
    assert "budget tiny: 25% of its shots used" in findings
    assert "gradient SNR stayed below 1" in findings
    whats = [x["what"] for x in r["timeline"]]
    assert whats[0] == "first job on sim_manila"
    assert sum(w.startswith("calibration_change sim_manila") for w in whats) == truth["drift_steps"]
    assert [x["t"] for x in r["timeline"]] == sorted(x["t"] for x in r["timeline"])
    assert r["training"]["best_kl"] == 1 / 8 and r["training"]["best_step"] == 7
    assert r["training"]["kl_kind"] == "sampled"  # the steps carry only a KL from their samples
    text = subprocess.run([*QOBS, "report", "--store", str(store)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert text.returncode == 0 and text.stdout.startswith(f"postmortem of run {r['run']['run_id']}")


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    env = clean_env()
    for args in (["report", "--store", str(tmp_path / "none.db")], ["report", "nope", "--store", str(tmp_path)]):
        proc = subprocess.run([*QOBS, *args], env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("qobs: error:"), proc.stderr


def test_the_training_summary_prefers_the_exact_kl_and_says_which() -> None:
    """The reference QGAN records both the KL of its samples (shot noise included) and the exact KL of its
    distribution; the demo's "best KL" is the exact one, so the report's must be too, and say so."""
    from qobs import report

    sampled = [0.30, 0.12, 0.20, 0.15]
    exact = [0.25, 0.14, 0.09, 0.10]
    steps = [{"step": i, "model": "qgan", "duration_s": 0.01, "metrics": {"kl": k, "exact_kl": e}}
             for i, (k, e) in enumerate(zip(sampled, exact, strict=True))]
    t = report._training(steps)
    assert (t["kl_kind"], t["first_kl"], t["last_kl"], t["best_kl"], t["best_step"]) == ("exact", 0.25, 0.10, 0.09, 2)
    for s in steps:
        del s["metrics"]["exact_kl"]
    t = report._training(steps)
    assert (t["kl_kind"], t["best_kl"], t["best_step"]) == ("sampled", 0.12, 1)
