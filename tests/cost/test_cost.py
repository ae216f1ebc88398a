"""Cost per pricing model against hand-computed Decimal figures; unpriced jobs; estimates; bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from decimal import Decimal

import pytest

import qobs
from qobs import cost, telemetry
from qobs.contract import Attr
from qobs.errors import ConfigError
from tests.conftest import clean_env


def _job(backend: str, provider: str = "p", *, context: dict | None = None, **fields):
    h = telemetry.start_job("backend_run", backend, provider)
    for k, v in fields.items():
        setattr(h.record, k, v)
    h.record.context.update(context or {})
    telemetry.finish_job(h)
    return h.record


@pytest.mark.parametrize(("backend", "circuits", "shots", "expected"), [
    ("Aria 1", 2, 2000, Decimal("60.60")),          # 2 x 0.30 + 2000 x 0.03
    ("Garnet", 1, 1000, Decimal("1.75")),           # 0.30 + 1000 x 0.00145
    ("Ankaa-3", 3, 300, Decimal("1.17")),           # 3 x 0.30 + 300 x 0.0009
    ("sim_manila", 1, 1000, Decimal("0.60")),       # qobs.sim: 0.10 + 1000 x 0.0005
])
def test_per_task_plus_per_shot(qobs_run, metric, backend, circuits, shots, expected):
    before = metric("qobs_cost_usd_total", backend=backend, source="catalog")
    rec = _job(backend, circuits=circuits, shots=shots)
    assert (rec.cost, rec.cost_currency, rec.cost_source) == (expected, "USD", "catalog")
    assert metric("qobs_cost_usd_total", backend=backend, source="catalog") == pytest.approx(
        before + float(expected))


@pytest.mark.parametrize(("execution_s", "tasks", "expected"), [
    (1.2345, 1, Decimal("0.00375")),       # below the 3 s minimum: 3000 ms x 0.075 / 60000
    (4.0001, 1, Decimal("0.00500125")),    # rounded up to 4001 ms
    (7.0, 2, Decimal("0.00875")),          # 3.5 s per task: 2 x 3500 ms
    (1.0, 2, Decimal("0.0075")),           # both tasks at the minimum: 2 x 3000 ms
])
def test_billed_duration_with_minimum(qobs_run, execution_s, tasks, expected):
    rec = _job("SV1", circuits=tasks, shots=100, execution_s=execution_s)
    assert rec.cost == expected and rec.cost_source == "catalog"


def test_qpu_seconds_from_provider_metrics(qobs_run, metric):
    rec = _job("ibm_torino", "ibm", circuits=1, shots=4000,
               context={telemetry.CTX_METRICS: {"usage": {"qpu_charge_time_seconds": 3}}})
    assert (rec.cost, rec.cost_source) == (Decimal("4.80"), "provider")  # 3 s x 1.60
    rec = _job("ibm_torino", "ibm", circuits=1, shots=4000, execution_s=2.5)
    assert (rec.cost, rec.cost_source) == (Decimal("4.000"), "estimate")  # no usage: execution time
    assert metric("qobs_cost_usd_total", backend="ibm_torino", source="provider") >= 4.8


@pytest.mark.parametrize("backend", ["aer_simulator", "aer_simulator_from(fake_manila)", "default.qubit",
                                     "lightning.qubit", "fake_manila"])
def test_local_simulators_are_free(qobs_run, backend):
    rec = _job(backend, circuits=1, shots=1024)
    assert (rec.cost, rec.cost_source, rec.priced) == (Decimal(0), "catalog", True)


@pytest.mark.parametrize(("status", "word"), [("error", "failed"), ("cancelled", "cancelled")])
def test_failed_and_cancelled_cost_zero_with_reason(qobs_run, status, word):
    rec = _job("Aria 1", circuits=1, shots=1000, status=status)
    assert rec.cost == Decimal(0) and word in rec.attributes[Attr.COST_REASON]


def test_unpriced_backend_is_counted_not_zero(qobs_run, metric):
    before = metric("qobs_unpriced_jobs_total", backend="mystery_qpu")
    rec = _job("mystery_qpu", circuits=1, shots=100)
    assert rec.priced is False and rec.cost is None
    assert metric("qobs_unpriced_jobs_total", backend="mystery_qpu") == before + 1
    qobs.flush()
    row = sqlite3.connect(qobs_run).execute("SELECT cost, cost_source FROM jobs").fetchone()
    assert row == (None, None)


def test_estimate_before_submission(qobs_run):
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    e = qobs.estimate([qc, qc], 100, "Aria 1")
    assert (e.amount, e.currency, e.source) == (Decimal("6.60"), "USD", "estimate")  # 2 x 0.30 + 200 x 0.03
    assert qobs.estimate(qc, 100, "mystery_qpu").amount is None
    assert qobs.estimate(qc, 5000, "sv1").amount == Decimal("0.00375")  # minimum billing
    assert qobs.estimate(qc, 100, "aer_simulator").amount == 0


def test_user_catalog_takes_precedence(qobs_run, tmp_path):
    p = tmp_path / "prices.yaml"
    p.write_text("prices:\n  - match: mystery_qpu\n    model: per_task_shot\n    per_task: 1\n    per_shot: '0.01'\n"
                 "  - match: aer_simulator\n    model: per_task_shot\n    per_shot: '0.001'\n")
    qobs.configure(prices=str(p))
    assert _job("mystery_qpu", circuits=2, shots=10).cost == Decimal("2.10")
    assert _job("aer_simulator", circuits=1, shots=1000).cost == Decimal("1.000")


@pytest.mark.parametrize(("text", "needle"), [
    ("prices:\n  - match: x\n    model: per_shot\n", "prices[0].model"),
    ("prices:\n  - match: x\n    model: per_task_shot\n    per_shot: -1\n", "prices[0].per_shot"),
    ("prices:\n  - match: x\n    model: per_task_shot\n    per_shot: abc\n", "prices[0].per_shot"),
    ("prices:\n  - match: x\n    model: duration\n", "prices[0].per_minute"),
    ("prices:\n  - {match: x, model: free, colour: red}\n", "prices[0].colour"),
    ("prices:\n  - match: x\n    model: free\n    currency: EUR\n", "prices[0].currency"),
    ("prices: [\n", "not valid YAML"),
])
def test_bad_price_file_is_one_line(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        cost.load_catalog(p)
    msg = str(ei.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    e = clean_env()
    e.update(env)
    return subprocess.run([sys.executable, "-m", "qobs.cli", *args], capture_output=True, text=True, env=e,
                          timeout=120)


def test_cli_rejects_bad_price_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("prices:\n  - match: x\n    model: per_task_shot\n    per_shot: lots\n")
    for args in (("probe", "--backend", "aer_simulator"), ("budgets", "check", "--file", "none.yaml")):
        r = _cli(*args, QOBS_PRICES=str(p), QOBS_STORE=str(tmp_path / "s.db"))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "per_shot" in lines[0] and str(p) in lines[0]


def test_cost_per_sample_per_step_and_run(qobs_run, metric):
    before = metric("qobs_samples_total", model="qgan")
    _job("sim_manila", circuits=1, shots=1000, model="qgan")   # 0.60
    _job("sim_manila", circuits=1, shots=200)                  # 0.20, no model: goes to the next step
    c = cost.record_step("qgan", 1, {"loss_g": 0.5}, samples=100)
    assert c == Decimal("0.80")
    assert metric("qobs_samples_total", model="qgan") == before + 100
    _job("Garnet", circuits=1, shots=1000, model="qgan")       # 1.75
    assert cost.record_step("qgan", 2, {}, samples=50) == Decimal("1.75")
    qobs.flush()
    conn = sqlite3.connect(qobs_run)
    rows = conn.execute("SELECT step, cost, samples FROM steps ORDER BY step").fetchall()
    assert [(s, Decimal(c), n) for s, c, n in rows] == [(1, Decimal("0.80"), 100), (2, Decimal("1.75"), 50)]
    run_id = conn.execute("SELECT run_id FROM runs").fetchone()[0]
    totals = cost.run_cost(conn, run_id)
    assert totals["cost"] == Decimal("2.55") and totals["samples"] == 150
    assert totals["cost_per_sample"] == Decimal("2.55") / 150


def test_jobs_inside_a_training_step_are_that_models_cost_and_budget(qobs_run, metric):
    """Two models trained side by side on a priced QPU: each step's cost holds only its own model's
    jobs (submitted inside its step, through the Qiskit adapter), and a model-scoped budget counts only
    that model's shots. Prices (qobs.sim): 0.10 per task + 0.0005 per shot."""
    from qiskit import QuantumCircuit, transpile

    from qobs import training
    from qobs.sim import SimulatedQPU

    qobs.budget("gen_only", shots=1_000_000, scope={"model": "gen"})
    qpu = SimulatedQPU(seed=1)
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.measure_all()
    qc = transpile(qc, qpu, seed_transpiler=1)
    shots = {"gen": 300, "critic": 50}
    costs: dict[str, list[Decimal | None]] = {"gen": [], "critic": []}
    for step in range(2):
        for model in ("gen", "critic"):
            with training.step(model=model, step=step) as s:
                qpu.run(qc, shots=shots[model]).result()
                s.record(samples=10)
            costs[model].append(s.cost)
    qpu.run(qc, shots=8).result()  # outside any step: no model, not the budget's
    qobs.flush()
    assert costs == {"gen": [Decimal("0.25")] * 2, "critic": [Decimal("0.125")] * 2}
    assert metric("qobs_shot_budget_used_shots", budget="gen_only") == 2 * 300
