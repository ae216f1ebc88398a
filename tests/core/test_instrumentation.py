"""Adapter discovery, post-import hooks, patch restoration and containment, with a real third-party adapter.

The adapter below is installed the way any third-party one is: a ``*.dist-info`` folder with an
``entry_points.txt`` in the ``qobs.adapters`` group, found by importlib.metadata on sys.path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import qobs
from qobs import instrumentation, telemetry
from qobs.instrumentation import WRAPPED, Patcher
from tests.conftest import AER_BELL, clean_env, run_python

SDK = textwrap.dedent("""
    class Device:
        def execute(self, n):
            if n < 0:
                raise ValueError("negative shots")
            return [n] * 3

    class Child(Device):
        pass
""")

ADAPTER = textwrap.dedent("""
    import sys
    from qobs import telemetry

    class FakeAdapter:
        name = "fake"
        modules = ("fakesdk",)
        imported_sdk_at_load = "fakesdk" in sys.modules

        def on_import(self, module, patcher):
            def make(original):
                def execute(self, n):
                    h = telemetry.start_job("device_execute", "fake_device", "fakesdk")
                    try:
                        out = original(self, n)
                    except Exception as exc:
                        h.record.status, h.record.error_type = "error", type(exc).__name__
                        telemetry.finish_job(h)
                        raise
                    h.record.shots, h.record.circuits = n, 1
                    telemetry.finish_job(h)
                    return out
                return execute
            patcher.wrap(module.Device, "execute", make)

        def uninstrument(self):
            pass
""")


@pytest.fixture
def third_party(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "fakesdk.py").write_text(SDK)
    (site / "qobs_fake_adapter.py").write_text(ADAPTER)
    info = site / "qobs_fake_adapter-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qobs-fake-adapter\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[qobs.adapters]\nfake = qobs_fake_adapter:FakeAdapter\n")
    monkeypatch.syspath_prepend(str(site))
    for m in ("fakesdk", "qobs_fake_adapter"):
        sys.modules.pop(m, None)
    yield site
    for m in ("fakesdk", "qobs_fake_adapter"):
        sys.modules.pop(m, None)


def test_third_party_adapter_is_discovered_and_patches_on_import(third_party, qobs_run, metric):
    assert "fake" in instrumentation.discover()
    qobs.instrument()  # again: harmless
    assert "fake" in instrumentation.active()
    assert "fakesdk" not in sys.modules  # instrument() imported no SDK
    import fakesdk  # imported after instrument(): the post-import hook patches it

    assert sys.modules["qobs_fake_adapter"].FakeAdapter.imported_sdk_at_load is False
    jobs = {"backend": "fake_device", "provider": "fakesdk", "operation": "device_execute"}
    ok0, err0 = metric("qobs_jobs_total", **jobs, status="ok"), metric("qobs_jobs_total", **jobs, status="error")
    assert fakesdk.Child().execute(5) == [5, 5, 5]
    with pytest.raises(ValueError, match="negative shots"):  # the user's exception, unchanged
        fakesdk.Device().execute(-1)
    assert metric("qobs_jobs_total", **jobs, status="ok") == ok0 + 1  # one job, though instrumented twice
    assert metric("qobs_jobs_total", **jobs, status="error") == err0 + 1


def test_uninstrument_restores_by_identity(third_party, qobs_run):
    qobs.uninstrument()
    import fakesdk  # imported plain: these are the originals

    original = fakesdk.Device.__dict__["execute"]
    qobs.instrument()
    assert fakesdk.Device.__dict__["execute"] is not original
    assert getattr(fakesdk.Device.__dict__["execute"], WRAPPED) is original
    qobs.uninstrument()
    assert fakesdk.Device.__dict__["execute"] is original
    assert "execute" not in fakesdk.Child.__dict__
    assert instrumentation.patch_count() == 0 and instrumentation.active() == []
    assert not any(type(f).__name__ == "_Finder" for f in sys.meta_path)


def test_instrument_twice_then_uninstrument_leaves_no_hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from qobs import runtime

    qobs.uninstrument()
    for var in [v for v in os.environ if v.startswith(("QOBS_", "OTEL_"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("QOBS_STORE", str(tmp_path / "runs.db"))
    qobs.instrument()  # a first cycle imports what qobs needs (multiprocessing registers its own exit hook)
    qobs.uninstrument()
    hook, meta = sys.excepthook, list(sys.meta_path)
    listeners, guards = list(telemetry._listeners), list(telemetry._guards)
    qobs.instrument()
    qobs.instrument()
    assert sys.excepthook is not hook and telemetry._listeners != listeners  # instrumented: hooks in place
    qobs.uninstrument()
    assert sys.excepthook is hook and sys.meta_path == meta
    assert telemetry._listeners == listeners and telemetry._guards == guards
    assert runtime.current() is None  # (atexit cannot be listed; runtime.remove_exit_hooks unregisters ours)
    assert instrumentation.patch_count() == 0


def test_patcher_restores_inherited_and_descriptor_attributes():
    class Base:
        @staticmethod
        def s() -> int:
            return 1

        def m(self) -> int:
            return 2

    class Sub(Base):
        pass

    raw_s = Base.__dict__["s"]
    p = Patcher()
    assert p.wrap(Base, "s", lambda orig: staticmethod(lambda: orig.__func__() + 10))
    assert p.wrap(Sub, "m", lambda orig: lambda self: orig(self) + 10)
    assert not p.wrap(Sub, "m", lambda orig: orig)  # already wrapped
    assert Base.s() == 11 and Sub().m() == 12 and Base().m() == 2
    p.restore()
    assert Base.__dict__["s"] is raw_s and "m" not in Sub.__dict__ and Sub().m() == 2


def test_failures_inside_qobs_do_not_change_results(qobs_run, metric):
    def broken_listener(record: telemetry.JobRecord) -> None:
        raise RuntimeError("bug in a listener")

    component = f"listener:{broken_listener.__qualname__}"
    before = metric("qobs_internal_errors_total", component=component)
    telemetry.add_job_listener(broken_listener)
    try:
        jobs0 = metric("qobs_jobs_total", backend="bx", provider="p", operation="sampler", status="ok")
        h = telemetry.start_job("sampler", "bx", "p")
        telemetry.finish_job(h)
    finally:
        telemetry.remove_job_listener(broken_listener)
    assert metric("qobs_internal_errors_total", component=component) == before + 1
    # The rest of the pipeline still recorded the job.
    assert metric("qobs_jobs_total", backend="bx", provider="p", operation="sampler", status="ok") == jobs0 + 1


def test_broken_listener_and_metrics_leave_real_results_and_user_errors_unchanged(qobs_run, metric, monkeypatch):
    """A seeded Aer job gives the same counts plain and under a qobs whose listener and metrics both fail;
    the user's own error keeps its type and message."""
    pytest.importorskip("qiskit_aer")
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit_aer.primitives import SamplerV2

    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.ry(0.7, 2)
    qc.measure_all()
    unbound = QuantumCircuit(1)
    unbound.rx(Parameter("x"), 0)
    unbound.measure_all()

    def run() -> tuple[dict[str, int], str]:
        sampler = SamplerV2(seed=5, options={"backend_options": {"max_parallel_threads": 1}})
        counts = sampler.run([qc], shots=500).result()[0].data.meas.get_counts()
        try:
            sampler.run([unbound], shots=10).result()
        except Exception as exc:  # noqa: BLE001 - the user's error is what is compared
            return counts, f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
        raise AssertionError("an unbound circuit must fail")

    qobs.uninstrument()
    plain = run()
    qobs.instrument()

    def broken_listener(record: telemetry.JobRecord) -> None:
        raise RuntimeError("bug in a listener")

    def broken_metrics(rec: telemetry.JobRecord) -> None:
        raise ZeroDivisionError("bug in the metrics")

    monkeypatch.setattr(telemetry, "_record_metrics", broken_metrics)
    before = metric("qobs_internal_errors_total", component="metrics")
    telemetry.add_job_listener(broken_listener)
    try:
        observed = run()
    finally:
        telemetry.remove_job_listener(broken_listener)
    assert observed == plain
    assert metric("qobs_internal_errors_total", component="metrics") - before == 2  # both jobs, contained


def test_user_sitecustomize_still_runs_under_qobs_run(tmp_path: Path):
    user = tmp_path / "usersite"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITE_RAN = True\n")
    prog = "import builtins, qobs.instrumentation as i; print(getattr(builtins, 'USER_SITE_RAN', False), i.active())"

    env = clean_env()
    env["PYTHONPATH"] = str(user)
    proc = subprocess.run([sys.executable, "-m", "qobs.cli", "run", "--store", str(tmp_path / "r.db"), "--",
                           sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("True ['pennylane', 'qiskit']"), proc.stdout


def test_handed_over_jobs_are_recorded_by_the_recorder_thread_and_drained_on_read(qobs_run):
    """No flush, no read: the recorder thread records a handed-over job and the writer commits it on
    their own; a job handed over just before a read is recorded by the read itself."""
    import sqlite3
    import time

    from prometheus_client import REGISTRY

    seen: list[str] = []
    listener = lambda rec: seen.append(rec.backend)  # noqa: E731
    telemetry.add_job_listener(listener)
    try:
        h = telemetry.start_job("backend_run", "recorder_dev", "p", circuits=1)
        h.record.shots = 10
        telemetry.finish_job_later(h)
        deadline = time.monotonic() + 10
        rows: list[tuple] = []
        while time.monotonic() < deadline and not rows:
            time.sleep(0.05)
            rows = sqlite3.connect(qobs_run).execute(
                "SELECT shots, status FROM jobs WHERE backend = 'recorder_dev'").fetchall()
        assert rows == [(10, "ok")] and seen == ["recorder_dev"]

        h2 = telemetry.start_job("backend_run", "recorder_dev2", "p", circuits=1)
        telemetry.finish_job_later(h2)
        assert REGISTRY.get_sample_value("qobs_jobs_total", {
            "backend": "recorder_dev2", "provider": "p", "operation": "backend_run", "status": "ok"}) == 1
        assert seen == ["recorder_dev", "recorder_dev2"]
    finally:
        telemetry.remove_job_listener(listener)


def test_drain_waits_for_a_job_the_recorder_thread_is_recording(qobs_run):
    """A reader (a budget guard, flush, a step's cost) must see a job the thread has taken off the queue
    but not finished recording: drain() waits for it rather than finding the queue empty."""
    import threading
    import time

    started, done = threading.Event(), []

    def slow(rec: telemetry.JobRecord) -> None:
        if rec.backend == "slow_dev":
            started.set()
            time.sleep(0.3)
            done.append(rec.backend)

    telemetry.add_job_listener(slow)
    try:
        telemetry.finish_job_later(telemetry.start_job("backend_run", "slow_dev", "p", circuits=1))
        assert started.wait(10)  # the recorder thread is inside the listener now
        telemetry.drain()
        assert done == ["slow_dev"]
    finally:
        telemetry.remove_job_listener(slow)


def test_a_scrape_does_not_wait_for_a_job_read_over_the_network(qobs_run):
    """An IBM job's metrics() is a request to the service, read where the job is recorded. A scrape must
    not wait for it (nor make it): it serves what is recorded, and the job shows in the next scrape. Both
    cases: the job still queued, and the recorder's thread inside the read."""
    import threading
    import time

    from prometheus_client import REGISTRY, generate_latest

    labels = {"backend": "net_dev", "provider": "p", "operation": "backend_run", "status": "ok"}
    for taken in (False, True):
        release, inside = threading.Event(), threading.Event()
        readers: list[threading.Thread] = []

        def read(h: telemetry.JobHandle, keep: bool, release=release, inside=inside, readers=readers) -> None:
            readers.append(threading.current_thread())
            inside.set()
            release.wait(60)  # the network
            h.record.shots = 5

        before = REGISTRY.get_sample_value("qobs_jobs_total", labels) or 0.0
        h = telemetry.start_job("backend_run", "net_dev", "p", circuits=1)
        if not taken:
            with telemetry._recorder._lock:  # hold the thread off: the job stays queued for the scrape to see
                telemetry._recorder._last = time.monotonic()  # not "starved": hand_over must not record inline
                telemetry.hand_over(h, read, may_block=True)
                scrape = threading.Thread(target=generate_latest, args=(REGISTRY,))
                scrape.start()
                scrape.join(0.5)
        else:
            telemetry.hand_over(h, read, may_block=True)
            assert inside.wait(30)  # the recorder's thread is inside the read
            scrape = threading.Thread(target=generate_latest, args=(REGISTRY,))
            scrape.start()
        scrape.join(30)  # a hang guard, not a time limit: a blocked scrape would wait for ``release``
        served_while_blocked = not scrape.is_alive()
        read_by_scrape = scrape in readers
        release.set()
        scrape.join(60)
        assert served_while_blocked and not read_by_scrape
        qobs.flush()
        assert REGISTRY.get_sample_value("qobs_jobs_total", labels) == before + 1  # recorded, once


def test_a_recorder_batch_updates_every_series_as_jobs_one_by_one_would(qobs_run):
    """The recorder tallies a batch's metrics and applies them once at its end: the totals, sums and
    buckets must be those of the jobs observed one at a time, for every kind of job in the batch, and
    a job recorded on its own (``finish_job``, another thread's path) during a batch is not lost."""
    import random
    import threading
    import time
    from bisect import bisect_left

    from prometheus_client import REGISTRY

    from qobs import contract

    rng = random.Random(7)
    jobs = []
    for i in range(300):
        status = "ok" if i % 7 else "error"
        jobs.append((f"batch_dev{i % 3}", status, rng.choice([1, 2]), rng.choice([0, 100, 1024]),
                     rng.choice([0.003, 0.2, 0.2000001, 1.0, 7.5, rng.random()]), rng.choice([None, 0.05])))
    rec = telemetry._recorder
    with rec._lock:  # one batch: the recorder thread cannot record until all are handed over
        rec._last = time.monotonic()
        for backend, status, circuits, shots, duration, queue in jobs:
            h = telemetry.start_job("sampler", backend, "p", circuits=circuits)
            h.record.status, h.record.shots, h.record.duration_s, h.record.queue_s = status, shots, duration, queue
            h.record.stats = [telemetry.CircuitStats(width=3, depth=5 + circuits, two_qubit_gates=2)] * circuits
            telemetry.finish_job_later(h)
        other = threading.Thread(target=lambda: telemetry.record_job(
            telemetry.JobRecord("sampler", "batch_dev0", "p", circuits=1, shots=5, duration_s=0.2)))
        other.start()
        other.join()
    jobs.append(("batch_dev0", "ok", 1, 5, 0.2, None))
    get = REGISTRY.get_sample_value  # a read drains (the batch is recorded and applied first)
    bounds = [*(contract.metric("qobs_job_duration_seconds").buckets or ()), float("inf")]
    for b in ("batch_dev0", "batch_dev1", "batch_dev2"):
        mine = [j for j in jobs if j[0] == b]
        for status in ("ok", "error"):
            want = sum(1 for j in mine if j[1] == status)
            assert get("qobs_jobs_total", {"backend": b, "provider": "p", "operation": "sampler",
                                           "status": status}) == want
        assert get("qobs_shots_total", {"backend": b, "provider": "p", "purpose": "forward"}) == sum(
            j[3] for j in mine)
        assert get("qobs_circuit_depth_sum", {"backend": b}) == sum(  # the last job carried no shapes
            (5 + j[2]) * j[2] for j in jobs[:-1] if j[0] == b)
        assert get("qobs_queue_duration_seconds_count", {"backend": b}) == sum(1 for j in mine if j[5] is not None)
        durations = [j[4] for j in mine]
        assert get("qobs_job_duration_seconds_sum", {"backend": b, "operation": "sampler"}) == pytest.approx(
            sum(durations))
        for le in bounds:
            label = "+Inf" if le == float("inf") else str(le)
            want = sum(1 for d in durations if bisect_left(bounds, d) <= bounds.index(le))
            assert get("qobs_job_duration_seconds_bucket", {"backend": b, "operation": "sampler",
                                                             "le": label}) == want, (b, le)


_IDLE = """
import sqlite3, sys, threading, time
import qobs
qobs.configure(store=sys.argv[1])
qobs.instrument()
""" + AER_BELL + """

def rows():
    return sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM jobs").fetchone()[0]


def wait_rows(n):
    deadline = time.monotonic() + 30
    while rows() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows()


def wakeups():
    out = {}
    for t in threading.enumerate():
        if t.name in ("qobs-recorder", "qobs-qiskit-finisher", "qobs-store-writer"):
            for line in open(f"/proc/self/task/{t.native_id}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    out[t.name] = int(line.split()[1])
    return out


for _ in range(3):
    sim.run(qc, shots=10).result()
sim.run(qc, shots=10)  # its result() is never called: the finisher records it
print("recorded", wait_rows(4))
time.sleep(3.0)  # idle: the threads have nothing left to look after
before = wakeups()
time.sleep(1.0)
after = wakeups()
print("idle wakeups", {k: after[k] - before[k] for k in before})
sim.run(qc, shots=10).result()
sim.run(qc, shots=10)
print("after idle", wait_rows(6))
"""


def test_idle_background_threads_sleep_until_a_job_arrives(tmp_path):
    """An idle program (a notebook between cells) pays no wake-ups: the recorder, the Qiskit finisher and the
    store writer sleep once they have nothing to look after, and wake for the next job, whose row still lands
    without a flush (a lean job through result(), and one whose result() is never called)."""
    proc = run_python("-c", _IDLE, str(tmp_path / "runs.db"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "recorded 4" in lines and "after idle 6" in lines
    idle = eval(next(line for line in lines if line.startswith("idle wakeups")).split(" ", 2)[2])
    assert set(idle) == {"qobs-recorder", "qobs-qiskit-finisher", "qobs-store-writer"}
    assert all(n <= 2 for n in idle.values()), idle  # were 20, 10 and 2 a second
