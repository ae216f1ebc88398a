"""A forked child records its jobs whatever the parent's other threads held at the fork."""

from __future__ import annotations

import sqlite3
import sys

from tests.conftest import AER_BELL, run_python

_BELL = AER_BELL + """sim.run(qc, shots=100).result()
"""

_HELD_AT_FORK = """
import multiprocessing, sys, threading
import qobs
from qobs import calibration, fidelity, metrics
qobs.configure(store=sys.argv[1], fidelity_sample=0.5)
qobs.instrument()
""" + _BELL + """
qobs.flush()

# Locks qobs's background threads take, held by another thread of the parent as it forks: a Prometheus
# scrape reading the jobs series (and the registry), the fidelity worker, a poller's hand-over.
jobs = metrics.instruments()["qobs_jobs_total"]._prom
held = [next(iter(jobs._metrics.values()))._value._lock, metrics.instruments().registry._lock,
        fidelity._lock, calibration._lock]
holding, done = threading.Event(), threading.Event()


def hold():
    for lock in held:
        lock.acquire()
    holding.set()
    done.wait()
    for lock in held:
        lock.release()


def child():
    sim.run(qc, shots=7).result()
    qobs.flush()


t = threading.Thread(target=hold)
t.start()
holding.wait()
p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join(60)
done.set()
t.join()
if p.exitcode is None:
    p.kill()
print("child exit", p.exitcode)
sim.run(qc, shots=100).result()  # the parent goes on once its thread let go
"""


def test_a_child_forked_while_other_threads_hold_qobs_locks_records_its_job(tmp_path):
    """Real prometheus_client, fidelity and calibration locks held by a parent thread at a real fork: the
    child's copies are fresh (qobs._forksafe), so its job is recorded; before, its first update of the jobs
    series waited for ever on the copy of the lock the scrape held."""
    store = tmp_path / "runs.db"
    r = run_python("-c", _HELD_AT_FORK, str(store))
    assert r.returncode == 0, r.stderr
    assert "child exit 0" in r.stdout, (r.stdout, r.stderr[-2000:])
    shots = sorted(s for (s,) in sqlite3.connect(store).execute("SELECT shots FROM jobs"))
    assert shots == [7, 100, 100], shots


_POOL = """
import sys, multiprocessing
from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator


def run(i):
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.measure_all()
    return sum(AerSimulator(seed_simulator=i).run(qc, shots=10 + i).result().get_counts().values())


if __name__ == "__main__":
    print(run(0))
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as p:  # __exit__ terminates the workers at once
        print(p.map(run, range(1, 5)))
"""


def test_jobs_of_pool_workers_terminated_by_the_with_block_are_recorded(tmp_path):
    """``with Pool() as p`` sends SIGTERM to its workers as soon as the results are in (no exit hooks run
    there): each task's jobs are committed before its result goes back."""
    script = tmp_path / "pool.py"
    script.write_text(_POOL)
    for method in ("fork", "spawn"):
        store = tmp_path / f"{method}.db"
        r = run_python("-m", "qobs.cli", "run", "--store", str(store), "--", sys.executable, str(script), method,
                       timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["10", "[11,", "12,", "13,", "14]"], r.stdout
        shots = sorted(s for (s,) in sqlite3.connect(store).execute("SELECT shots FROM jobs"))
        assert shots == [10, 11, 12, 13, 14], (method, shots)


def test_uninstrument_gives_the_pool_worker_back(tmp_path):
    store = str(tmp_path / "r.db")
    code = (f"import multiprocessing.pool as pool, qobs; orig = pool.worker; qobs.configure(store={store!r});"
            " qobs.instrument(); wrapped = pool.worker is not orig; qobs.uninstrument();"
            " print(wrapped, pool.worker is orig)")
    r = run_python("-c", code, timeout=120)
    assert r.stdout.split() == ["True", "True"], (r.stdout, r.stderr)


_LEAN_AT_FORK = """
import multiprocessing, sys, time
import qobs
qobs.configure(store=sys.argv[1])
qobs.instrument()
""" + _BELL + """
job = sim.run(qc, shots=100)  # a repeat: on the lean lane until its result() or the finisher's scan
while not job.done():
    time.sleep(0.001)


def child():
    sim.run(qc, shots=7).result()  # the child's first lean job starts the child's own finisher
    sim.run(qc, shots=7).result()
    time.sleep(0.6)  # a round of its finisher (and the flush below settles what that holds)
    qobs.flush()


p = multiprocessing.get_context("fork").Process(target=child)
p.start()
p.join(60)
print("child exit", p.exitcode)
job.result()
"""


def test_a_forked_child_does_not_record_the_parents_jobs_again(tmp_path):
    """A job the parent submitted before the fork belongs to the parent: the child's finisher must not record
    it too (it would count twice: both write to the parent's run)."""
    store = tmp_path / "runs.db"
    proc = run_python("-c", _LEAN_AT_FORK, str(store), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "child exit 0" in proc.stdout
    rows = sqlite3.connect(store).execute("SELECT shots FROM jobs ORDER BY shots").fetchall()
    assert [r[0] for r in rows] == [7, 7, 100, 100]
