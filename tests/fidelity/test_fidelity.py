"""Fidelity probe: ideal distributions, seeded sampling, drift on the simulated QPU, the probe command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

import qobs
from qobs import fidelity, telemetry
from tests.conftest import clean_env


def _ghz():
    return fidelity.reference_circuit()


def test_ideal_distribution_maps_measured_qubits_to_clbits():
    from qiskit import QuantumCircuit

    assert fidelity.ideal_distribution(_ghz()) == pytest.approx({"000": 0.5, "111": 0.5})
    qc = QuantumCircuit(3, 2)
    qc.x(2)             # q2 = 1, q0 = q1 = 0
    qc.measure(2, 0)    # clbit 0 <- q2 (rightmost character)
    qc.measure(0, 1)
    assert fidelity.ideal_distribution(qc) == pytest.approx({"01": 1.0})
    mid = QuantumCircuit(1, 1)
    mid.measure(0, 0)
    mid.x(0)            # gate after a measurement: no ideal distribution
    assert fidelity.ideal_distribution(mid) is None


def test_hellinger_against_exact_counts():
    assert fidelity.fidelity_of(_ghz(), {"000": 512, "111": 512}) == pytest.approx(1.0)
    assert fidelity.fidelity_of(_ghz(), {"000": 1024}) == pytest.approx(0.5)  # (sqrt(.5*1))^2


def test_sampling_is_deterministic_given_the_seed(qobs_run):
    def decisions(seed: int) -> list[bool]:
        qobs.configure(fidelity_sample=0.3, fidelity_seed=seed)
        return [fidelity._sampled() for _ in range(50)]

    a, b, c = decisions(1), decisions(1), decisions(2)
    assert a == b and a != c and 5 < sum(a) < 25


def _cx_noise():
    """A noise model that depolarises every CX (20 %): a GHZ state's fidelity falls visibly below 1."""
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    noise = NoiseModel()
    noise.add_all_qubit_quantum_error(depolarizing_error(0.2, 2), ["cx"])
    return noise


def _aer_checks(metric) -> float:
    """Fidelity checks of ``aer_simulator`` jobs so far, passed or failed."""
    return sum(metric("qobs_fidelity_checks_total", backend="aer_simulator", result=r) for r in ("pass", "fail"))


def _job_with_counts(backend: str, circuit, counts):
    h = telemetry.start_job("backend_run", backend, "p", circuits=1, shots=sum(counts.values()))
    h.record.context.update({telemetry.CTX_CIRCUITS: [circuit], telemetry.CTX_COUNTS: [counts]})
    telemetry.finish_job(h)


def test_listener_checks_sampled_jobs_off_thread(qobs_run, metric):
    qobs.configure(fidelity_sample=1.0, fidelity_baseline_checks=2)
    for _ in range(2):
        _job_with_counts("dev_a", _ghz(), {"000": 500, "111": 500})
    _job_with_counts("dev_a", _ghz(), {"000": 1000})  # fidelity 0.5: fails against baseline 1.0
    fidelity.flush()
    assert metric("qobs_fidelity_baseline", backend="dev_a") == pytest.approx(1.0)
    assert metric("qobs_fidelity", backend="dev_a") == pytest.approx(0.5)
    assert metric("qobs_fidelity_checks_total", backend="dev_a", result="fail") == 1
    qobs.configure(fidelity_sample=0.0)
    before = metric("qobs_fidelity_checks_total", backend="dev_b", result="pass")
    _job_with_counts("dev_b", _ghz(), {"000": 500, "111": 500})
    fidelity.flush()
    assert metric("qobs_fidelity_checks_total", backend="dev_b", result="pass") == before


def test_jobs_of_noiseless_simulators_are_not_checked(qobs_run, metric):
    """Every eligible job is sampled; the ideal Aer and reference-primitive jobs are left out (only
    shot noise to see), the same circuit on Aer with a noise model is checked."""
    from qiskit import transpile
    from qiskit.primitives import StatevectorSampler
    from qiskit_aer import AerSimulator

    qobs.configure(fidelity_sample=1.0)
    noise = _cx_noise()
    ideal, noisy = AerSimulator(seed_simulator=1), AerSimulator(noise_model=noise, seed_simulator=1)
    ghz = transpile(_ghz(), ideal)
    checks = lambda: _aer_checks(metric)  # noqa: E731
    before = checks()
    for _ in range(3):
        ideal.run(ghz, shots=256).result()
    StatevectorSampler(seed=1).run([ghz], shots=256).result()
    fidelity.flush()
    assert checks() == before
    assert metric("qobs_fidelity_checks_total", backend="statevector", result="pass") == 0
    noisy.run(ghz, shots=2048).result()
    fidelity.flush()
    assert checks() == before + 1
    assert 0.5 < metric("qobs_fidelity", backend="aer_simulator") < 0.97  # depolarised: visibly below 1
    for _ in range(3):  # the ideal simulator with a noise model given to run() alone: noisy jobs, each checked
        ideal.run(ghz, shots=2048, noise_model=noise).result()
    fidelity.flush()
    assert checks() == before + 4


def test_a_noise_model_in_a_primitives_run_options_makes_its_jobs_noisy(qobs_run, metric):
    """A sampler on an ideal Aer simulator with a noise model in its run options (``BackendSamplerV2``, Aer's
    own ``SamplerV2``) runs noisy jobs: each is checked, also when the noise model is set after its ideal
    jobs were remembered for the lean lane."""
    from qiskit import transpile
    from qiskit.primitives import BackendSamplerV2
    from qiskit_aer import AerSimulator
    from qiskit_aer.primitives import SamplerV2

    qobs.configure(fidelity_sample=1.0)
    noise = _cx_noise()
    ideal = AerSimulator(seed_simulator=1)
    ghz = transpile(_ghz(), ideal)
    checks = lambda: _aer_checks(metric)  # noqa: E731
    before = checks()
    for sampler in (BackendSamplerV2(backend=ideal, options={"run_options": {"noise_model": noise}}),
                    SamplerV2(seed=1, options={"run_options": {"noise_model": noise}})):
        for _ in range(2):
            sampler.run([ghz], shots=512).result()
    fidelity.flush()
    assert checks() == before + 4
    sampler = BackendSamplerV2(backend=ideal)
    for _ in range(3):  # ideal: not checked, and remembered
        sampler.run([ghz], shots=512).result()
    fidelity.flush()
    assert checks() == before + 4
    sampler.options.run_options = {"noise_model": noise}
    sampler.run([ghz], shots=512).result()
    fidelity.flush()
    assert checks() == before + 5


def test_the_probes_transpiled_circuit_is_kept_per_backend_object():
    """The reference circuit is transpiled once per backend that keeps its target, and never handed to another
    backend that took the id of one let go. Aer makes its target anew on every read, following its options:
    its circuit follows a noise model's basis gates set since the last probe."""
    from qiskit.providers.fake_provider import GenericBackendV2
    from qiskit_aer import AerSimulator
    from qiskit_aer.noise import NoiseModel, depolarizing_error

    a, b = GenericBackendV2(5, seed=1), GenericBackendV2(7, seed=2)
    ca = fidelity._isa(a, 0)
    assert fidelity._isa(a, 0) is ca
    fidelity._transpiled[id(b)] = fidelity._transpiled[id(a)]  # as if b had taken the id of a backend let go
    cb = fidelity._isa(b, 0)
    assert cb is not ca and cb.num_qubits == 7 and fidelity._isa(b, 0) is cb
    aer = AerSimulator()
    assert "cx" in fidelity._isa(aer, 0).count_ops()
    noise = NoiseModel(basis_gates=["rz", "sx", "cz"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.1, 2), ["cz"])
    aer.set_options(noise_model=noise)
    ops = fidelity._isa(aer, 0).count_ops()
    assert "cz" in ops and "cx" not in ops


def test_pinned_baseline(qobs_run, metric):
    qobs.configure(fidelity_sample=1.0, fidelity_baseline=0.8)
    _job_with_counts("dev_c", _ghz(), {"000": 700, "111": 300})  # 0.958...: pass
    _job_with_counts("dev_c", _ghz(), {"000": 1000})              # 0.5 < 0.72: fail
    fidelity.flush()
    assert metric("qobs_fidelity_checks_total", backend="dev_c", result="pass") == 1
    assert metric("qobs_fidelity_checks_total", backend="dev_c", result="fail") == 1


def test_drift_lowers_fidelity_monotonically_and_fails_checks(qobs_run, metric):
    from qobs.sim import SimulatedQPU

    qobs.configure(fidelity_baseline_checks=2)
    qpu = SimulatedQPU(seed=11)
    results = {}
    for step in (0, 0, 1, 2):  # errors x1 (twice: the baseline), x2, x4
        qpu.set_drift(step)
        results.setdefault(step, []).append(fidelity.probe(qpu, shots=4096, seed=3))
    f1, f2, f4 = (results[s][-1].fidelity for s in (0, 1, 2))
    assert f1 > f2 > f4
    base = results[0][-1].check.baseline
    assert base == pytest.approx((results[0][0].fidelity + f1) / 2)
    for step, factor_f in ((1, f2), (2, f4)):
        expected = "fail" if factor_f < 0.9 * base else "pass"
        assert results[step][-1].check.result == expected
    assert results[2][-1].check.result == "fail"
    assert metric("qobs_fidelity_checks_total", backend="sim_manila", result="fail") >= 1
    assert metric("qobs_fidelity", backend="sim_manila") == pytest.approx(f4)
    qobs.flush()
    conn = sqlite3.connect(qobs_run)
    purposes = [r[0] for r in conn.execute("SELECT purpose FROM jobs WHERE backend = 'sim_manila'")]
    assert purposes == ["probe"] * 4
    recorded = [json.loads(d)["fidelity"] for (d,) in
                conn.execute("SELECT data FROM events WHERE kind = 'fidelity_check' ORDER BY id")]
    assert recorded[1:] == sorted(recorded[1:], reverse=True)


def test_probe_command(tmp_path):
    env = clean_env()
    store = tmp_path / "runs.db"
    r = subprocess.run([sys.executable, "-m", "qobs.cli", "probe", "--backend", "sim_manila", "--count", "2",
                        "--interval", "0", "--store", str(store)], capture_output=True, text=True, env=env,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and all("fidelity 0." in ln for ln in lines)
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT COUNT(*), MIN(purpose), MIN(cost) FROM jobs").fetchone() == (2, "probe", "0.6120")
    r = subprocess.run([sys.executable, "-m", "qobs.cli", "probe", "--backend", "nowhere"], capture_output=True,
                       text=True, env={**env, "QOBS_STORE": str(store)}, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unknown backend" in r.stderr


def test_probe_on_a_pennylane_device(qobs_run, metric):
    pytest.importorskip("pennylane")
    before = metric("qobs_shots_total", backend="default.qubit", provider="pennylane", purpose="probe")
    r = fidelity.probe("default.qubit", shots=2000)
    assert sum(r.counts.values()) == 2000 and set(r.counts) <= {"000", "111"}  # an ideal GHZ state
    p0 = r.counts.get("000", 0) / 2000
    assert r.fidelity == pytest.approx((0.5 ** 0.5 * (p0 ** 0.5 + (1 - p0) ** 0.5)) ** 2)  # Hellinger, by hand
    # recorded once, by the PennyLane adapter, as probe traffic
    assert metric("qobs_shots_total", backend="default.qubit", provider="pennylane", purpose="probe") - before == 2000
    with pytest.raises(qobs.errors.ConfigError, match=r"default\.nope"):
        fidelity.probe("default.nope")


_CHECKS = """
import sys, qobs
from qobs import fidelity
qobs.configure(store=sys.argv[1], fidelity_baseline_checks=2)
qobs.instrument()
for f in map(float, sys.argv[2:]):
    c = fidelity.record_check("dev_r", f)
    print(c.result, c.baseline)
qobs.flush()
"""


def test_a_learned_baseline_outlives_the_process_until_rebaselined(tmp_path):
    """A restart must not re-learn the baseline from a device that drifted meanwhile: each run is its
    own process on one store, as a nightly job's runs are."""
    env = clean_env()
    store = str(tmp_path / "runs.db")

    def run(*fidelities: float) -> list[tuple[str, float | None]]:
        r = subprocess.run([sys.executable, "-c", _CHECKS, store, *map(str, fidelities)], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        return [(ln.split()[0], None if ln.split()[1] == "None" else float(ln.split()[1]))
                for ln in r.stdout.splitlines()]

    def cli(*args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "qobs.cli", "fidelity", *args, "--store", store],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    first = run(0.95, 0.93)  # learns (0.95 + 0.93) / 2
    assert [c[0] for c in first] == ["pass", "pass"] and first[1][1] == pytest.approx(0.94)
    assert "dev_r: 0.9400" in cli("baselines")
    drifted = run(0.80)  # the device drifted between runs: below 0.9 * 0.94
    assert drifted == [("fail", pytest.approx(0.94))]
    assert "was 0.9400" in cli("rebaseline", "dev_r")
    assert "dev_r: none" in cli("baselines")
    assert run(0.80, 0.82, 0.60) == [("pass", None), ("pass", pytest.approx(0.81)), ("fail", pytest.approx(0.81))]
    assert "dev_r: 0.8100" in cli("baselines")


def test_a_pinned_baseline_is_not_carried_into_the_next_process(tmp_path):
    env = clean_env()
    store = str(tmp_path / "runs.db")
    for extra, expected in (({"QOBS_FIDELITY_BASELINE": "0.99"}, "fail 0.99"), ({}, "pass None")):
        r = subprocess.run([sys.executable, "-c", _CHECKS, store, "0.5"], capture_output=True, text=True,
                           env={**env, **extra}, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == expected


_CHECKER = """
import sys, qobs
from qobs import fidelity
qobs.configure(store=sys.argv[1], fidelity_baseline_checks=2)
qobs.instrument()
for line in sys.stdin:
    if line.strip() == "look":  # as if EPOCH_RECHECK_S had passed since this process last looked
        fidelity.EPOCH_RECHECK_S = 0.0
        continue
    c = fidelity.record_check("dev_r", float(line))
    qobs.flush()
    print(c.result, c.baseline, flush=True)
"""


def test_a_rebaseline_is_not_undone_by_a_process_that_was_running(tmp_path):
    """A long run keeps its baseline in memory. Checks it makes after a rebaseline, before it looks again,
    carry the old baseline: they must not become the stored one; once it looks, it learns anew too."""
    env = clean_env()
    store = str(tmp_path / "runs.db")
    running = subprocess.Popen([sys.executable, "-c", _CHECKER, store], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def check(line: str) -> str:
        running.stdin.write(line + "\n")
        running.stdin.flush()
        return running.stdout.readline().strip()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qobs.cli", "fidelity", *args, "--store", store],
                              capture_output=True, text=True, env=env, timeout=60)

    try:
        assert check("0.95") == "pass None"
        assert check("0.93").startswith("pass 0.94")
        assert "was 0.9400" in cli("rebaseline", "dev_r").stdout  # the device was recalibrated
        assert check("0.80").startswith("fail 0.94")  # the running process has not looked yet
        assert "dev_r: none" in cli("baselines").stdout  # its old-epoch check does not restore 0.94
        later = subprocess.run([sys.executable, "-c", _CHECKS, store, "0.80"], capture_output=True, text=True,
                               env=env, timeout=120)
        assert later.returncode == 0, later.stderr
        assert later.stdout.strip() == "pass None"  # a new process learns anew
        running.stdin.write("look\n")
        assert check("0.81") == "pass None"  # the running process noticed the rebaseline: it learns anew
        assert check("0.79").startswith("pass 0.8")
    finally:
        running.stdin.close()
        assert running.wait(timeout=60) == 0, running.stderr.read()
    assert "dev_r: 0.8000" in cli("baselines").stdout  # (0.81 + 0.79) / 2, learned in the new epoch


def test_rebaseline_of_a_backend_never_checked_is_refused(tmp_path):
    env = clean_env()
    store = str(tmp_path / "runs.db")
    r = subprocess.run([sys.executable, "-c", _CHECKS, store, "0.95"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "qobs.cli", "fidelity", "rebaseline", "dev_typo", "--store", store],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "dev_typo" in r.stderr and "dev_r" in r.stderr  # names the backends it could have meant
    conn = sqlite3.connect(store)
    assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = ?", (fidelity.REBASELINE,)).fetchone()[0] == 0


def test_checks_written_by_older_qobs_versions(tmp_path):
    """Check events written before qobs kept baselines have no ``source``: their baseline may have been
    pinned, so they must not become the next process's learned baseline. Those written before epochs
    have a source and no epoch: one written after the latest rebaseline is the baseline."""
    from qobs.store import connect

    store = tmp_path / "runs.db"
    conn = connect(store)
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('old', 1.0, 'fidelity_check', "
                 "'dev_r', ?)", (json.dumps({"fidelity": 0.5, "baseline": 0.99, "result": "fail"}),))
    assert fidelity.stored_baseline(conn, "dev_r") is None
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('new', 2.0, 'fidelity_check', "
                 "'dev_r', ?)", (json.dumps({"fidelity": 0.9, "baseline": 0.91, "result": "pass",
                                             "source": "learned"}),))
    assert fidelity.stored_baseline(conn, "dev_r")["baseline"] == 0.91
    # a rebaseline, then a check from a qobs that kept baselines without epochs: it came after, so it counts
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES (NULL, 3.0, ?, 'dev_r', '{}')",
                 (fidelity.REBASELINE,))
    assert fidelity.stored_baseline(conn, "dev_r") is None
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES ('newer', 4.0, 'fidelity_check', "
                 "'dev_r', ?)", (json.dumps({"fidelity": 0.8, "baseline": 0.82, "result": "pass",
                                             "source": "learned"}),))
    assert fidelity.stored_baseline(conn, "dev_r")["baseline"] == 0.82


def _noisy_job_checked_slowly(store, monkeypatch, during=None) -> None:
    """One noisy Aer job, sampled for a fidelity check that is real but starts 0.3 s late (then ``during()``
    runs on the checks' worker)."""
    import time

    from qiskit import transpile
    from qiskit_aer import AerSimulator

    real = fidelity.fidelity_of

    def slow(*args, **kwargs):
        time.sleep(0.3)
        if during is not None:
            during()
        return real(*args, **kwargs)

    monkeypatch.setattr(fidelity, "fidelity_of", slow)
    qobs.configure(store=str(store), fidelity_sample=1.0)
    noise = _cx_noise()
    noisy = AerSimulator(noise_model=noise, seed_simulator=1)
    noisy.run(transpile(_ghz(), noisy), shots=512).result()


def test_qobs_flush_waits_for_the_checks_of_the_jobs_it_records(qobs_run, monkeypatch):
    """``qobs.flush()`` returns with the fidelity checks of the jobs recorded so far done and their events
    committed: a store read right after it sees them. The check starts 0.3 s late, so that a flush that did
    not wait would commit before it."""
    _noisy_job_checked_slowly(qobs_run, monkeypatch)
    qobs.flush()
    rows = sqlite3.connect(qobs_run).execute("SELECT data FROM events WHERE kind = 'fidelity_check'").fetchall()
    assert len(rows) == 1 and 0.5 < json.loads(rows[0][0])["fidelity"] < 0.97


def test_checks_still_queued_when_the_run_ends_land_in_that_run(qobs_run, monkeypatch):
    """Ending the run (``qobs.shutdown()``, and so the exit) waits for the fidelity checks still queued: their
    events are that run's, and no second run is started by a check finishing after it ended. A ``flush()``
    on the checks' own worker (a check that ends up asking for one) returns at once instead of waiting for
    itself."""
    import time

    waited: list[float] = []

    def flush_on_the_worker() -> None:
        t = time.monotonic()
        fidelity.flush(1.0)
        waited.append(time.monotonic() - t)

    _noisy_job_checked_slowly(qobs_run, monkeypatch, flush_on_the_worker)
    qobs.shutdown()
    ended = time.time()
    time.sleep(0.5)
    conn = sqlite3.connect(qobs_run)
    job_runs = [r[0] for r in conn.execute("SELECT run_id FROM jobs")]
    events = [r[0] for r in conn.execute("SELECT run_id FROM events WHERE kind = 'fidelity_check'")]
    assert len(job_runs) == 1 and events == job_runs
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE started_at >= ?", (ended,)).fetchone()[0] == 0
    assert len(waited) == 1 and waited[0] < 0.5


def test_a_check_the_end_of_the_run_did_not_wait_for_starts_no_new_run(qobs_run, monkeypatch):
    """A check still running when the run's end stops waiting (``STOP_CHECKS_WAIT_S``) is dropped: its event
    does not start another run after the program ended qobs."""
    import time

    from qobs import runtime

    monkeypatch.setattr(runtime, "STOP_CHECKS_WAIT_S", 0.05)
    _noisy_job_checked_slowly(qobs_run, monkeypatch)
    qobs.shutdown()
    ended = time.time()
    time.sleep(0.6)  # the check (0.3 s late) is done by now
    conn = sqlite3.connect(qobs_run)
    assert conn.execute("SELECT COUNT(*) FROM runs WHERE started_at >= ?", (ended,)).fetchone()[0] == 0
    assert runtime.current() is None
