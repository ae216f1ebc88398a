"""The fidelity probe: Hellinger fidelity of measured counts against the ideal distribution.

On the job path, a deterministic seeded sample (``QOBS_FIDELITY_SAMPLE``, default 2 %) of finished
jobs whose circuits are small (at most ``MAX_QUBITS``) is checked off-thread (jobs of noiseless
simulators, which can only show shot noise, are not sampled): the ideal
distribution of the executed circuit (statevector of its unitary part, marginalised onto the
measured clbits; cached per circuit structure and parameters) against the job's counts. The
baseline per backend is the mean of the first ``QOBS_FIDELITY_BASELINE_CHECKS`` checks, or the
pinned ``QOBS_FIDELITY_BASELINE``; a check fails below ``(1 - tolerance) * baseline``. A learned baseline
outlives the process: every check event carries it, and the next process on the same store carries on
from it (a restart must not re-learn the baseline from a device that has drifted meanwhile) until
``qobs fidelity rebaseline BACKEND`` records that the next checks establish a new one. The rebaseline
starts a new epoch (its event's id): processes that were running notice it within ``EPOCH_RECHECK_S``,
and checks of an older epoch never decide the stored baseline.

``probe(backend)`` (and ``qobs probe``) runs a fixed reference circuit (3-qubit GHZ) with purpose
``probe``: steady synthetic traffic and a clean drift signal.
"""

from __future__ import annotations

import contextvars
import os
import queue
import random
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from qobs import _forksafe, features, runtime
from qobs._context import CTX_BACKEND, CTX_CIRCUITS, CTX_COUNTS, CTX_NOISE_MODEL, CTX_PROBE_DRAW
from qobs.errors import ConfigError, contained

MAX_QUBITS = 10
_CACHE_SIZE = 512
_SKIP = {"barrier", "delay", "id"}


@dataclass(frozen=True)
class Check:
    backend: str
    fidelity: float
    baseline: float | None
    result: str  # pass | fail


# --- ideal distributions ------------------------------------------------------------------------

_ideal_cache: OrderedDict[Any, dict[str, float] | None] = OrderedDict()
_ideal_lock = threading.Lock()
_gates: dict[str, Any] | None = None


def _circuit_key(circuit: Any) -> Any:
    qi = {q: i for i, q in enumerate(circuit.qubits)}
    ci = {c: i for i, c in enumerate(circuit.clbits)}
    ops = []
    for inst in circuit.data:
        op = inst.operation
        params = tuple(float(p) if isinstance(p, (int, float)) else repr(p) for p in getattr(op, "params", ()))
        ops.append((op.name, params, tuple(qi[q] for q in inst.qubits), tuple(ci[c] for c in inst.clbits)))
    return circuit.num_qubits, circuit.num_clbits, tuple(ops)


def ideal_distribution(circuit: Any) -> dict[str, float] | None:
    """Ideal probabilities over the circuit's clbits (count-key order), or None when not computable.

    Handles final measurements only (no mid-circuit measurement, reset, classical control or
    unbound parameters); cached per circuit structure and parameter values.
    """
    if circuit.num_qubits > MAX_QUBITS or circuit.num_clbits == 0:
        return None
    key = _circuit_key(circuit)
    with _ideal_lock:
        if key in _ideal_cache:
            _ideal_cache.move_to_end(key)
            return _ideal_cache[key]
    dist = _compute_ideal(key)
    with _ideal_lock:
        _ideal_cache[key] = dist
        if len(_ideal_cache) > _CACHE_SIZE:
            _ideal_cache.popitem(last=False)
    return dist


def _compute_ideal(key: Any) -> dict[str, float] | None:
    from qiskit import QuantumCircuit
    from qiskit.circuit import CircuitInstruction
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.quantum_info import Statevector

    global _gates
    nq, nc, ops = key
    gates = _gates = _gates or get_standard_gate_name_mapping()
    qc = QuantumCircuit(nq)
    measured: dict[int, int] = {}  # clbit -> qubit
    done: set[int] = set()
    for name, params, qargs, cargs in ops:
        if name == "measure":
            measured[cargs[0]] = qargs[0]
            done.add(qargs[0])
            continue
        if name in _SKIP:
            continue
        if done.intersection(qargs) or cargs or name not in gates:
            return None  # mid-circuit measurement, classical control, reset or an unknown gate
        if any(isinstance(p, str) for p in params):
            return None  # unbound parameter
        gate = gates[name]
        if params:
            gate = type(gate)(*params)
        qc._append(CircuitInstruction(gate, tuple(qc.qubits[i] for i in qargs)))
    if not measured:
        return None
    clbits = sorted(measured)
    probs = Statevector(qc).probabilities_dict(qargs=[measured[c] for c in clbits])
    out: dict[str, float] = {}
    for k, p in probs.items():
        if p < 1e-12:
            continue
        full = ["0"] * nc
        for j, c in enumerate(clbits):
            full[nc - 1 - c] = k[len(k) - 1 - j]
        s = "".join(full)
        out[s] = out.get(s, 0.0) + p
    return out


def fidelity_of(circuit: Any, counts: dict[str, int]) -> float | None:
    """Hellinger fidelity of ``counts`` against the ideal distribution of ``circuit``."""
    ideal = ideal_distribution(circuit)
    if ideal is None or not counts:
        return None
    from qiskit.quantum_info import hellinger_fidelity

    clean = {k.replace(" ", ""): v for k, v in counts.items()}
    return float(hellinger_fidelity(ideal, clean))


# --- baselines and checks -----------------------------------------------------------------------

_lock = threading.Lock()
_rng: random.Random | None = None
_baselines: dict[str, dict[str, Any]] = {}


def reset() -> None:
    """Forget baselines and restart the seeded sampler (settings changed; tests)."""
    global _rng
    flush(1.0)
    with _lock:
        _rng = None
        _baselines.clear()
    from qobs import calibration

    calibration.reset()


def _settings() -> Any:
    return features.settings()


REBASELINE = "fidelity_rebaseline"  # event kind: the next checks of its subject establish a new baseline
EPOCH_RECHECK_S = 30.0  # how often a running process looks for a rebaseline of a backend it checks


def checked_backends(conn: Any) -> list[str]:
    """The backends a store holds fidelity checks of, sorted."""
    return [r[0] for r in conn.execute(
        "SELECT DISTINCT subject FROM events WHERE kind = 'fidelity_check' AND subject IS NOT NULL ORDER BY 1")]


def epoch(conn: Any, backend: str) -> int:
    """``backend``'s baseline epoch: the id of its latest rebaseline event (0 if it never had one)."""
    row = conn.execute("SELECT MAX(id) FROM events WHERE kind = ? AND subject = ?", (REBASELINE, backend)).fetchone()
    return row[0] or 0


def baseline_event(conn: Any, backend: str) -> Any:
    """The event that decides ``backend``'s stored baseline: (kind, data, ts, run_id, id), or None.

    That is the latest check of the current epoch whose baseline was learned (or carried on from the
    store), else the latest rebaseline. A check of an older epoch (a process that was running when the
    backend was rebaselined and had not noticed yet) does not count; nor does a check with no ``source``,
    written before baselines were kept, whose baseline may have been pinned. A check with no ``epoch``
    (written by a qobs that kept baselines without epochs) counts when it came after the rebaseline."""
    current = epoch(conn, backend)
    row = conn.execute(
        "SELECT kind, data, ts, run_id, id FROM events WHERE subject = ? AND kind = 'fidelity_check' AND id > ?"
        " AND json_extract(data, '$.baseline') IS NOT NULL AND json_extract(data, '$.source') IN ('learned', 'stored')"
        " AND COALESCE(json_extract(data, '$.epoch'), ?) = ? ORDER BY id DESC LIMIT 1",
        (backend, current, current, current)).fetchone()
    if row is None and current:
        row = conn.execute("SELECT kind, data, ts, run_id, id FROM events WHERE id = ?", (current,)).fetchone()
    return row


def stored_baseline(conn: Any, backend: str) -> dict[str, Any] | None:
    """The baseline a store holds for ``backend``: the latest learned one (``{"baseline", "ts", "run_id"}``),
    or None when it holds none or a rebaseline came after it. Pinned baselines are settings, not kept."""
    row = baseline_event(conn, backend)
    if row is None or row[0] == REBASELINE:
        return None
    import json

    value = json.loads(row[1]).get("baseline")
    return {"baseline": float(value), "ts": row[2], "run_id": row[3]} if isinstance(value, (int, float)) else None


def _load_baseline(backend: str, *, epoch_only: bool = False) -> tuple[float | None, int | None]:
    """The store's baseline for ``backend`` and its epoch, (None, None) without a store (read once per
    backend per process and then every ``EPOCH_RECHECK_S``, on the fidelity worker, never on a job's path)."""
    from qobs import runtime
    from qobs.store import connect

    rt = runtime.current() or runtime.start()
    path = getattr(getattr(rt, "writer", None), "path", None)
    if path is None:
        return None, None
    with contained("fidelity"):
        conn = connect(path, create=False)
        try:
            current = epoch(conn, backend)
            found = None if epoch_only else stored_baseline(conn, backend)
        finally:
            conn.close()
        return (None if found is None else found["baseline"]), current
    return None, None


def _fresh_state(backend: str, pinned: float | None) -> dict[str, Any]:
    """A backend's baseline state, from the pin or the store (epoch None: the store could not be read)."""
    stored, current = _load_baseline(backend, epoch_only=pinned is not None)  # a pin is a setting: not kept
    return {"values": [], "baseline": pinned if pinned is not None else stored, "epoch": current,
            "source": "pinned" if pinned is not None else "stored" if stored is not None else "learned",
            "seen": time.monotonic()}


def _state(backend: str, pinned: float | None) -> dict[str, Any]:
    """``backend``'s baseline state. Every ``EPOCH_RECHECK_S`` (claimed by one thread) it looks at the store:
    a newer epoch (a rebaseline) replaces the state with the store's (a baseline another process learned in
    that epoch, or none: learn anew; a pin stays a pin); epochs only move forward."""
    with _lock:
        st = _baselines.get(backend)
        due = st is not None and time.monotonic() - st["seen"] >= EPOCH_RECHECK_S
        if due:
            st["seen"] = time.monotonic()  # this thread looks; the others carry on with the state as it is
    if st is None:
        st = _fresh_state(backend, pinned)
        with _lock:
            st = _baselines.setdefault(backend, st)
    elif due:
        new = _fresh_state(backend, pinned)
        with _lock:
            if new["epoch"] is None:  # the store could not be read: carry on
                pass
            elif st["epoch"] is None:  # the first read failed: the epoch was unknown, and what was learned stands
                st["epoch"] = new["epoch"]
            elif new["epoch"] > st["epoch"]:
                st.update(new)
    return st


def record_check(backend: str, fidelity: float, *, start_run: bool = True) -> Check:
    """Compare one fidelity with the backend's baseline; update gauges, counter and events (without
    ``start_run``, the event only into a run going on: ``telemetry.record_event``)."""
    s = _settings()
    st = _state(backend, s.fidelity_baseline)
    with _lock:
        baseline = st["baseline"]
        if baseline is None:
            st["values"].append(fidelity)
            if len(st["values"]) >= s.fidelity_baseline_checks:
                baseline = st["baseline"] = sum(st["values"]) / len(st["values"])
            result = "pass"  # while the baseline is being established
        else:
            result = "pass" if fidelity >= (1.0 - s.fidelity_tolerance) * baseline else "fail"
        source, current = st["source"], st["epoch"]
    from qobs.metrics import instruments
    from qobs.telemetry import record_event

    m = instruments()
    m["qobs_fidelity"].child(backend).set(fidelity)
    if baseline is not None:
        m["qobs_fidelity_baseline"].child(backend).set(baseline)
    m["qobs_fidelity_checks_total"].child(backend, result).inc()
    record_event("fidelity_check", backend, {"fidelity": fidelity, "baseline": baseline, "result": result,
                                             "tolerance": s.fidelity_tolerance, "source": source,
                                             "epoch": current or 0}, start_run=start_run)
    return Check(backend, fidelity, baseline, result)


def baseline(backend: str) -> float | None:
    with _lock:
        st = _baselines.get(backend)
        return None if st is None else st["baseline"]


# --- the job listener and its worker ------------------------------------------------------------

# (backend, circuit, the job's counts per circuit, which of them): counts are read off the user's thread.
_q: queue.Queue[tuple[str, Any, Any, int]] = queue.Queue()
_worker: tuple[int, threading.Thread] | None = None
_worker_lock = threading.Lock()
_forksafe.module_locks(__name__, "_lock", "_ideal_lock", "_worker_lock")


def _ensure_worker() -> None:
    global _worker, _q
    w = _worker
    if w is not None and w[0] == os.getpid() and w[1].is_alive():
        return
    with _worker_lock:
        w = _worker
        if w is not None and w[0] == os.getpid() and w[1].is_alive():
            return
        if w is not None and w[0] != os.getpid():
            _q = queue.Queue()  # a forked child: the parent's queue and thread are not ours
        t = threading.Thread(target=_work, name="qobs-fidelity", daemon=True)
        t.start()
        _worker = (os.getpid(), t)


def _work() -> None:
    q = _q
    while True:
        backend, circuit, counts, i = q.get()
        try:
            with contained("fidelity"):
                c = counts[i]
                f = fidelity_of(circuit, dict(c)) if c else None
                # A check that the run's end stopped waiting for (``runtime.STOP_CHECKS_WAIT_S``) is dropped:
                # its run is over, and reading the baseline or storing the event would start another.
                if f is not None and runtime.current() is not None:
                    record_check(backend, f, start_run=False)
        finally:
            q.task_done()


def flush(timeout: float = 10.0) -> None:
    """Wait until queued checks are done (tests, benchmarks, exit)."""
    from qobs.telemetry import drain

    drain()  # jobs not yet recorded may queue checks
    wait_queued(timeout)


def wait_queued(timeout: float) -> None:
    """Wait (at most ``timeout``) until the checks queued so far are done (``runtime.flush`` drains first)."""
    w = _worker
    if w is None or w[0] != os.getpid() or w[1] is threading.current_thread():
        return  # no worker of this process; or on the worker itself, whose own check is not done yet
    deadline = time.monotonic() + timeout
    while _q.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.005)


def _sampled() -> bool:
    global _rng
    s = _settings()
    if s.fidelity_sample <= 0:
        return False
    with _lock:
        if _rng is None:
            _rng = random.Random(s.fidelity_seed)
        return _rng.random() < s.fidelity_sample


def on_job(record: Any) -> None:
    """Job listener: pick a seeded sample of small finished jobs with counts and queue their check.

    Jobs of a noiseless simulator are left out: their counts differ from the ideal distribution by
    shot noise alone, so a check would cost CPU and say nothing. The counts of a sampled job are
    read on the worker thread (for primitives that is a pass over every shot).
    """
    counts = record.context.get(CTX_COUNTS)
    circuits = record.context.get(CTX_CIRCUITS)
    if not counts or not circuits or record.purpose == "probe" or record.status != "ok" or _noiseless(record):
        return  # most jobs: nothing kept their counts (``wants_result``), so nothing to look at
    if not isinstance(circuits, (list, tuple)):
        circuits = [circuits]
    if isinstance(counts, dict):
        counts = [counts]
    draw = record.context.get(CTX_PROBE_DRAW)
    if not (_sampled() if draw is None else draw):  # drawn at hand-over, or now (jobs recorded directly)
        return
    for i in range(min(len(circuits), len(counts))):
        circ = circuits[i]
        if getattr(circ, "num_qubits", MAX_QUBITS + 1) <= MAX_QUBITS and hasattr(circ, "clbits"):
            _ensure_worker()
            _q.put((record.backend, circ, counts, i))
            return


_COUNTING_OPERATIONS = frozenset({"backend_run", "sampler"})  # Qiskit jobs with counts of circuits with clbits


def wants_result(record: Any) -> bool:
    """Result wanter (``telemetry.add_result_wanter``): only the jobs the probe samples keep their counts.

    The seeded draw is made here, as the job is handed over (``on_job`` uses it), so that the other jobs
    let their results go at once. Jobs of an ideal simulator never draw (their repeats take the adapters'
    lean lane, which asks nobody): the sample of noisy jobs is the same whatever ideal jobs ran between."""
    if (record.operation not in _COUNTING_OPERATIONS or record.purpose == "probe" or _probe_ctx.get() is not None
            or _settings().fidelity_sample <= 0 or _noiseless(record)):
        return False
    draw = record.context[CTX_PROBE_DRAW] = _sampled()
    return draw


wants_result.skips_noiseless = True  # type: ignore[attr-defined]  # never wants a noiseless job (lean_possible)


def _noiseless(record: Any) -> bool:
    ctx = record.context  # a noise model given to the job's run() makes an ideal simulator's job noisy
    return ctx.get(CTX_NOISE_MODEL) is None and noiseless(record.simulator, record.provider, ctx.get(CTX_BACKEND))


def noiseless(simulator: bool | None, provider: str, backend: Any) -> bool:
    """Whether a job ran on an ideal simulator: Qiskit's reference primitives and BasicSimulator, or
    Aer without a noise model (``backend``: the backend object, None for the reference primitives)."""
    if simulator is not True:
        return False
    if provider == "qiskit":  # the reference primitives and BasicSimulator; not fake (noisy) backends
        return backend is None or type(backend).__name__ == "BasicSimulator"
    if backend is None or not type(backend).__module__.startswith("qiskit_aer"):
        return False
    return getattr(getattr(backend, "options", None), "noise_model", False) is None


# --- the reference probe ------------------------------------------------------------------------

_probe_ctx: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("qobs_probe", default=None)
_probe_ids: set[str] = set()


def mark_probe(record: Any) -> None:
    """Give jobs run by ``probe()`` (and recorded by an adapter) purpose ``probe``."""
    ctx = _probe_ctx.get()
    if ctx is not None or (record.job_id is not None and record.job_id in _probe_ids):
        record.purpose = "probe"
        if ctx is not None:
            ctx["seen"] = True
        elif record.job_id is not None:
            _probe_ids.discard(record.job_id)


def reference_circuit() -> Any:
    """The fixed reference circuit: a 3-qubit GHZ state, all qubits measured."""
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(3, name="qobs_probe_ghz3")
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    return qc


@dataclass(frozen=True)
class ProbeResult:
    backend: str
    fidelity: float
    check: Check
    counts: dict[str, int]
    seconds: float
    job_id: str | None


# id(backend) -> (the backend and its target, held weakly; the transpiler's seed; the reference circuit
# transpiled for them), for backends that keep their target
_transpiled: dict[int, tuple[Any, Any, int, Any]] = {}


def _isa(backend: Any, seed: int) -> Any:
    """The reference circuit transpiled for ``backend`` (its current target, ``seed``), once. The entry is
    checked by identity: a backend made after another was let go may reuse its id. A backend whose target is
    made anew on every read (Aer's, which follows its options: a noise model's basis gates) is transpiled
    for every probe, as nothing tells when its target changed."""
    from qiskit import transpile

    target = getattr(backend, "target", None)
    stable = target is not None and getattr(backend, "target", None) is target
    if stable:
        hit = _transpiled.get(id(backend))
        if hit is not None and _deref(hit[0]) is backend and _deref(hit[1]) is target and hit[2] == seed:
            return hit[3]
    c = transpile(reference_circuit(), backend=backend, seed_transpiler=seed, optimization_level=1)
    if stable:
        if len(_transpiled) > 64:
            _transpiled.clear()
        _transpiled[id(backend)] = (_weak(backend), _weak(target), seed, c)
    return c


def _weak(obj: Any) -> Any:
    """A weak reference to ``obj`` where it takes one, else ``obj`` itself (None, an object without weakrefs)."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return obj


def _deref(ref: Any) -> Any:
    return ref() if type(ref) is weakref.ref else ref


def probe(backend: Any, *, shots: int = 1024, seed: int = 0) -> ProbeResult:
    """Run the reference circuit on ``backend`` (a Qiskit BackendV2 or a name) and check its fidelity.

    The job is recorded with purpose ``probe`` (by the Qiskit adapter when instrumented, else here)
    and goes through the budget guards. Raises what the backend raises (e.g. expired credentials).
    """
    from qobs import features, telemetry
    from qobs.cost import backend_name

    features.ensure_active()
    if isinstance(backend, str):
        backend = resolve_backend(backend)
    name = backend_name(backend)
    provider = getattr(backend, "provider_name", None) or "qiskit"
    circ = reference_circuit() if isinstance(backend, PennyLaneProbeBackend) else _isa(backend, seed)
    telemetry.check_submit(telemetry.SubmitRequest("probe", name, provider, shots, 1, purpose="probe",
                                                   backend_obj=backend, circuit_objs=[circ]))
    ctx: dict[str, Any] = {"seen": False}
    token = _probe_ctx.set(ctx)
    handle = telemetry.start_job("probe", name, provider, purpose="probe", shots_requested=shots, circuits=1)
    t0 = time.perf_counter()
    job = None
    try:
        try:
            job = backend.run(circ, shots=shots)
            jid = job.job_id() if callable(getattr(job, "job_id", None)) else None
            if jid:
                _probe_ids.add(jid)
            result = job.result()
            counts = result.get_counts(0) if hasattr(result, "get_counts") else result[0].data.meas.get_counts()
        except BaseException as exc:
            telemetry.drain()  # an adapter may have handed the job over already
            if not ctx["seen"]:
                rec = handle.record
                rec.status = "cancelled" if "cancel" in type(exc).__name__.lower() else "error"
                rec.error_type = type(exc).__name__
                if job is None:
                    rec.submission_reason = _submission_reason(exc)
                    if isinstance(exc, telemetry.SubmissionRefused):
                        rec.status = "blocked"  # a budget's refusal: policy, not a failure
                rec.context[telemetry.CTX_BACKEND] = backend
                telemetry.finish_job(handle)
            raise
        seconds = time.perf_counter() - t0
        telemetry.drain()
        if not ctx["seen"]:  # no adapter recorded it: record it here
            rec = handle.record
            rec.job_id = jid
            rec.shots = sum(counts.values())
            rec.simulator = getattr(backend, "simulator", None) if isinstance(
                getattr(backend, "simulator", None), bool) else None
            rec.context.update({telemetry.CTX_BACKEND: backend, telemetry.CTX_CIRCUITS: [circ],
                                telemetry.CTX_COUNTS: [counts], telemetry.CTX_RESULT: result})
            metrics_fn = getattr(job, "metrics", None)
            if callable(metrics_fn):
                with contained("probe"):
                    jm = metrics_fn()
                    rec.context[telemetry.CTX_METRICS] = jm
                    rec.queue_s, rec.execution_s = _queue_exec(jm)
            telemetry.finish_job(handle)
        elif handle.span is not None:
            with contained("tracing"):
                handle.span.end()
    finally:
        _probe_ctx.reset(token)
        if job is not None and jid:
            _probe_ids.discard(jid)
    f = fidelity_of(circ, counts)
    assert f is not None  # the reference circuit always has an ideal distribution
    return ProbeResult(name, f, record_check(name, f), dict(counts), seconds, jid)


class PennyLaneProbeBackend:
    """A PennyLane device behind the probe's ``run(circuit, shots)``: the same reference circuit, as a QNode.

    Its execution goes through the PennyLane adapter when instrumented (recorded with purpose probe).
    """

    provider_name = "pennylane"

    def __init__(self, device: Any) -> None:
        self.device = device
        self.name = getattr(device, "short_name", None) or getattr(device, "name", "pennylane")

    def run(self, circuit: Any, shots: int) -> Any:
        """``circuit`` (the reference circuit: H and CX, then measure all) as a QNode with ``shots``."""
        import pennylane as qml

        gates = {"h": qml.Hadamard, "cx": qml.CNOT}
        ops = [(gates[inst.operation.name], [circuit.find_bit(q).index for q in inst.qubits])
               for inst in circuit.data if inst.operation.name not in ("measure", "barrier")]  # KeyError: new gate

        def reference() -> Any:
            for gate, wires in ops:
                gate(wires=wires)
            return qml.counts(wires=range(circuit.num_qubits))

        counts = qml.QNode(reference, self.device, shots=shots)()
        return _Done({str(k): int(v) for k, v in counts.items()})


class _Done:
    """A finished probe job (PennyLane executes synchronously)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def result(self) -> Any:
        return self

    def get_counts(self, _index: int = 0) -> dict[str, int]:
        return self.counts


def _submission_reason(exc: BaseException) -> str:
    n = type(exc).__name__.lower()
    if isinstance(exc, PermissionError) or "credential" in n or "auth" in n or "token" in n:
        return "credentials"
    if getattr(exc, "reason", None) == "budget":
        return "budget"
    return "other"


def _queue_exec(jm: Any) -> tuple[float | None, float | None]:
    from datetime import datetime

    try:
        ts = jm["timestamps"]
        c, r, f = (datetime.fromisoformat(ts[k].replace("Z", "+00:00")).timestamp()
                   for k in ("created", "running", "finished"))
        return max(r - c, 0.0), max(f - r, 0.0)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, None


def resolve_backend(name: str) -> Any:
    """A backend object from a name: ``aer_simulator``, ``sim_*`` (qobs.sim), ``fake_*`` (IBM fakes),
    or a PennyLane device name (``default.qubit``). Raises ConfigError for anything else."""
    if name == "aer_simulator":
        from qiskit_aer import AerSimulator

        return AerSimulator(max_parallel_threads=1)
    if name.startswith("sim_"):
        from qobs.sim import SimulatedQPU

        return SimulatedQPU(name=name)
    if name.startswith("fake_"):
        try:
            from qiskit_ibm_runtime.fake_provider import FakeProviderForBackendV2
        except ImportError:
            raise ConfigError(f"backend {name!r} needs qiskit-ibm-runtime (pip install 'qobs[ibm]')") from None
        try:
            return FakeProviderForBackendV2().backend(name)
        except Exception:  # noqa: BLE001
            raise ConfigError(f"unknown fake backend {name!r}") from None
    if name.startswith(("default.", "lightning.")):
        import pennylane as qml

        try:
            return PennyLaneProbeBackend(qml.device(name, wires=3))
        except Exception as exc:  # noqa: BLE001 - a plugin device that cannot be built here
            raise ConfigError(f"cannot create PennyLane device {name!r}: {type(exc).__name__}: {exc}") from None
    raise ConfigError(f"unknown backend {name!r}: expected aer_simulator, sim_<name> (qobs.sim), fake_<name> "
                      "or a PennyLane device name")
