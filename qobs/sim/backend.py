"""A Qiskit BackendV2 that behaves like remote hardware, without a network.

Aer (density matrix, one thread) with FakeManilaV2's noise model; seeded queue delays, device
failures and cancellations; credentials that expire; a calibration that drifts step by step
(errors x ``drift_factor`` per step, T1/T2 divided alike). Jobs are asynchronous: QUEUED ->
RUNNING -> DONE/ERROR/CANCELLED on a worker thread that runs one job at a time, ``result()``
blocks, ``cancel()`` works while queued, and ``metrics()`` reports IBM-style timestamps and usage.

``time_scale`` multiplies every queue delay the device waits (0.001 turns a 30 s queue into
30 ms); timestamps are wall-clock times, so the queue time they give is the time actually waited.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from qiskit.providers import BackendV2, JobError, JobStatus, JobV1, Options

DISTRIBUTIONS = ("exponential", "fixed", "lognormal", "uniform")


class CredentialsExpiredError(PermissionError):
    """The simulated account's credentials expired: the job was not submitted."""


class JobCancelledError(JobError):
    """``result()`` of a cancelled job."""


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_models: dict[float, tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def _noisy(scale: float) -> tuple[Any, Any]:
    """A FakeManilaV2 target with errors scaled (capped at 0.5) and T1/T2 divided, and its Aer simulator.

    Shared by every SimulatedQPU (read-only once built)."""
    with _models_lock:
        m = _models.get(scale)
        if m is None:
            m = _models[scale] = _build_noisy(scale)
        return m


def _build_noisy(scale: float) -> tuple[Any, Any]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    fake = FakeManilaV2()
    target = fake.target
    if scale != 1.0:
        for name in target.operation_names:
            props = target[name]
            if not props:
                continue
            for p in props.values():
                if p is not None and p.error is not None:
                    p.error = min(p.error * scale, 0.5)
        qps = target.qubit_properties  # a copy: scale it and assign it back
        if qps:
            for qp in qps:
                if qp is not None:
                    if qp.t1 is not None:
                        qp.t1 /= scale
                    if qp.t2 is not None:
                        qp.t2 /= scale
            target.qubit_properties = qps
    sim = AerSimulator.from_backend(fake, method="density_matrix", max_parallel_threads=1)
    return target, sim


class SimJob(JobV1):
    """An asynchronous job on the simulated QPU."""

    def __init__(self, backend: SimulatedQPU, job_id: str, circuits: list[Any], shots: int, seed: int,
                 outcome: str, ready_at: float) -> None:
        super().__init__(backend, job_id)
        self._circuits = circuits
        self._shots = shots
        self._seed = seed
        self._outcome = outcome
        self._ready_at = ready_at
        self._status = JobStatus.QUEUED
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._result: Any = None
        self._error: BaseException | None = None
        self.created = time.time()
        self.running_at: float | None = None
        self.finished_at: float | None = None
        self.calibration_time: float | None = None
        self.drift_step: int | None = None

    def submit(self) -> None:
        raise JobError("SimJob is submitted by SimulatedQPU.run")

    def status(self) -> JobStatus:
        return self._status

    def done(self) -> bool:
        return self._status == JobStatus.DONE

    def result(self, timeout: float | None = None) -> Any:
        """Block until the job ends; raise JobError for a failed job, JobCancelledError if cancelled."""
        if not self._done.wait(timeout):
            raise JobError(f"job {self.job_id()} did not finish within {timeout} s")
        if self._status == JobStatus.CANCELLED:
            raise JobCancelledError(f"job {self.job_id()} was cancelled")
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self) -> bool:
        """Cancel a queued job (running jobs run to the end, as on hardware)."""
        with self._lock:
            if self._status in (JobStatus.QUEUED, JobStatus.INITIALIZING):
                self._finish(JobStatus.CANCELLED)
                return True
        return False

    def _finish(self, status: JobStatus) -> None:
        self._status = status
        self.finished_at = time.time()
        self._done.set()

    def metrics(self) -> dict[str, Any]:
        """IBM runtime-style metrics: timestamps (created/running/finished) and usage."""
        ts: dict[str, Any] = {"created": _iso(self.created),
                              "running": _iso(self.running_at) if self.running_at else None,
                              "finished": _iso(self.finished_at) if self.finished_at else None}
        secs = (self.finished_at - self.running_at) if self.running_at and self.finished_at else 0.0
        status = {JobStatus.DONE: "complete", JobStatus.ERROR: "failed", JobStatus.CANCELLED: "cancelled"}
        return {"timestamps": ts,
                "usage": {"quantum_seconds": secs, "seconds": secs, "status": status.get(self._status, "pending")},
                "calibration": {"time": self.calibration_time, "drift_step": self.drift_step}}


class SimulatedQPU(BackendV2):
    """A seeded, reproducible stand-in for a remote QPU (provider ``qobs.sim``, priced in the catalog).

    Parameters (times in seconds): ``queue_mean_s`` and ``queue_distribution`` (exponential,
    fixed, lognormal, uniform) for queue delays, scaled by ``time_scale``; ``failure_rate`` and
    ``cancel_rate`` per job; ``credential_ttl_s`` after which ``run`` raises
    ``CredentialsExpiredError``; drift every ``drift_every_jobs`` started jobs or every
    ``drift_every_s`` seconds, by ``drift_factor``, at most ``max_drift_steps`` steps;
    ``calibration_age_s``: how old the initial calibration is.
    """

    provider_name = "qobs.sim"

    def __init__(self, name: str = "sim_manila", *, seed: int = 0, time_scale: float = 1.0,
                 queue_mean_s: float = 0.0, queue_distribution: str = "exponential", failure_rate: float = 0.0,
                 cancel_rate: float = 0.0, credential_ttl_s: float | None = None,
                 drift_every_jobs: int | None = None, drift_every_s: float | None = None, drift_factor: float = 2.0,
                 max_drift_steps: int | None = None, calibration_age_s: float = 0.0) -> None:
        super().__init__(provider=None, name=name, backend_version="1.0",
                         description="qobs simulated remote QPU (Aer density matrix + FakeManilaV2 noise)")
        if queue_distribution not in DISTRIBUTIONS:
            raise ValueError(f"queue_distribution must be one of {', '.join(DISTRIBUTIONS)}")
        for label, rate in (("failure_rate", failure_rate), ("cancel_rate", cancel_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{label} must be between 0 and 1")
        if failure_rate + cancel_rate > 1.0:
            raise ValueError("failure_rate + cancel_rate must not exceed 1")
        self.seed = seed
        self.time_scale = time_scale
        self.queue_mean_s = queue_mean_s
        self.queue_distribution = queue_distribution
        self.failure_rate = failure_rate
        self.cancel_rate = cancel_rate
        self.credential_ttl_s = credential_ttl_s
        self.drift_every_jobs = drift_every_jobs
        self.drift_every_s = drift_every_s
        self.drift_factor = drift_factor
        self.max_drift_steps = max_drift_steps
        self._revoked = False
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._submitted = 0
        self._started = 0
        self._models: dict[int, tuple[Any, Any]] = {}
        self.drift_step = 0
        self._target, self._aer = self._model(0)
        self.created_at = time.time()
        self._credentials_from = self.created_at
        self.calibration_time = self.created_at - calibration_age_s
        self.calibration_history: list[tuple[float, int]] = [(self.calibration_time, 0)]
        self._queue: queue.Queue[SimJob] = queue.Queue()
        self._last_end = 0.0
        self._worker: threading.Thread | None = None

    # --- BackendV2 -------------------------------------------------------------------------
    @property
    def target(self) -> Any:
        return self._target

    @property
    def max_circuits(self) -> int:
        return 300

    @classmethod
    def _default_options(cls) -> Options:
        return Options(shots=1024)

    @property
    def simulator(self) -> bool:
        return False  # it plays hardware

    # --- calibration -----------------------------------------------------------------------
    @property
    def error_scale(self) -> float:
        return self.drift_factor ** self.drift_step

    def _model(self, step: int) -> tuple[Any, Any]:
        m = self._models.get(step)
        if m is None:
            m = self._models[step] = _noisy(self.drift_factor ** step)
        return m

    def set_drift(self, step: int, at: float | None = None) -> None:
        """Recalibrate to drift step ``step`` (errors x ``drift_factor ** step``) now (or at ``at``)."""
        with self._lock:
            if step == self.drift_step:
                return
            self.drift_step = step
            self._target, self._aer = self._model(step)
            self.calibration_time = at if at is not None else time.time()
            self.calibration_history.append((self.calibration_time, step))

    def advance_drift(self) -> None:
        """One drift step more, unless ``max_drift_steps`` is reached."""
        with self._lock:
            if self.max_drift_steps is None or self.drift_step < self.max_drift_steps:
                self.set_drift(self.drift_step + 1)

    def _maybe_drift(self, now: float) -> None:
        if self.drift_every_jobs and self._started > 0 and self._started % self.drift_every_jobs == 0:
            self.advance_drift()
        elif self.drift_every_s and now - self.calibration_time >= self.drift_every_s:
            self.advance_drift()

    # --- credentials -----------------------------------------------------------------------
    def credentials_valid(self, now: float | None = None) -> bool:
        if self._revoked:
            return False
        if self.credential_ttl_s is None:
            return True
        return (now or time.time()) - self._credentials_from < self.credential_ttl_s

    def expire_credentials(self) -> None:
        self._revoked = True

    def renew_credentials(self) -> None:
        self._revoked = False
        self._credentials_from = time.time()

    # --- running ---------------------------------------------------------------------------
    def _queue_delay(self) -> float:
        m = self.queue_mean_s
        if m <= 0:
            return 0.0
        d = self.queue_distribution
        if d == "fixed":
            return m
        if d == "uniform":
            return self._rng.uniform(0, 2 * m)
        if d == "lognormal":
            import math

            sigma = 0.75
            return self._rng.lognormvariate(math.log(m) - sigma * sigma / 2, sigma)
        return self._rng.expovariate(1.0 / m)

    def _needs_transpile(self, circuit: Any) -> bool:
        t = self._target
        if circuit.num_qubits > t.num_qubits:
            return True
        names = set(t.operation_names) | {"barrier"}
        index = {q: i for i, q in enumerate(circuit.qubits)}
        for inst in circuit.data:
            op = inst.operation
            if op.name not in names:
                return True
            if len(inst.qubits) == 2 and not t.instruction_supported(op.name, tuple(index[q] for q in inst.qubits)):
                return True
        return False

    def run(self, run_input: Any, **options: Any) -> SimJob:
        """Submit circuits; returns at once with a queued job. Raises CredentialsExpiredError."""
        now = time.time()
        if not self.credentials_valid(now):
            raise CredentialsExpiredError(f"{self.name}: credentials expired; renew them to submit jobs")
        circuits = list(run_input) if isinstance(run_input, (list, tuple)) else [run_input]
        if not circuits:
            raise JobError("no circuits to run")
        if any(self._needs_transpile(c) for c in circuits):
            from qiskit import transpile

            circuits = transpile(circuits, backend=self, seed_transpiler=self.seed)
        shots = int(options.get("shots") or self.options.shots)
        now = time.time()  # submitted once validated and transpiled
        with self._lock:
            self._submitted += 1
            n = self._submitted
            delay = self._queue_delay()
            draw = self._rng.random()
            outcome = "fail" if draw < self.failure_rate else \
                "cancel" if draw < self.failure_rate + self.cancel_rate else "ok"
            job = SimJob(self, f"{self.name}-{self.seed}-{n:06d}-{uuid.uuid4().hex[:6]}", circuits, shots,
                         self.seed * 1_000_003 + n, outcome, now + delay * self.time_scale)
            self._queue.put(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name=f"qobs-sim-{self.name}", daemon=True)
                self._worker.start()
        return job

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=5.0)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            wait = job._ready_at - time.time()
            if wait > 0:
                job._done.wait(wait)  # returns early when the job is cancelled
            self._execute(job)

    def _execute(self, job: SimJob) -> None:
        with job._lock:
            if job._status != JobStatus.QUEUED:
                return
            job._status = JobStatus.RUNNING
            job.running_at = time.time()
        with self._lock:
            self._started += 1
            self._maybe_drift(job.running_at)
            aer = self._aer
            job.calibration_time, job.drift_step = self.calibration_time, self.drift_step
        if job._outcome == "cancel":
            job._finish(JobStatus.CANCELLED)
            return
        if job._outcome == "fail":
            job._error = JobError(f"job {job.job_id()} failed on the device (simulated fault)")
            job._finish(JobStatus.ERROR)
            return
        try:
            result = aer.run(job._circuits, shots=job._shots, seed_simulator=job._seed).result()
            result.backend_name = self.name
            result.job_id = job.job_id()
            job._result = result
            job._finish(JobStatus.DONE)
        except Exception as exc:  # noqa: BLE001 - reported through result(), like a device error
            job._error = JobError(f"job {job.job_id()} failed: {exc}")
            job._finish(JobStatus.ERROR)
