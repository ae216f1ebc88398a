"""The SLI contract: every metric, label, bucket, span name and span attribute qobs emits.

This module is the single source of truth. Instruments, alert rules, dashboards, runbooks and
docs are generated from it; nothing else spells a series or attribute name. Series names are
public API: add, never rename.

Buckets sit on SLO thresholds (see ``SLO_THRESHOLDS``) so that "fraction of jobs under 1 s" is an
exact bucket, not an interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Thresholds that SLOs are written against. Every one is a bucket bound of the histogram named.
SLO_THRESHOLDS: dict[str, tuple[str, float]] = {
    "sample_latency_simulator": ("qobs_job_duration_seconds", 0.2),
    "sample_latency_hardware": ("qobs_job_duration_seconds", 1.0),
    "job_duration_slow": ("qobs_job_duration_seconds", 5.0),
    "transpile": ("qobs_transpile_duration_seconds", 30.0),
    "queue_interactive": ("qobs_queue_duration_seconds", 60.0),
    "queue_batch": ("qobs_queue_duration_seconds", 3600.0),
}

# Closed value sets of labels whose values are an enumeration.
# blocked: refused by the user's own budget (policy, not a failure: it burns no job-success error budget).
STATUS_VALUES = ("ok", "error", "cancelled", "blocked")
PURPOSE_VALUES = ("forward", "gradient", "probe")
COST_SOURCE_VALUES = ("catalog", "provider", "estimate")
FIDELITY_RESULT_VALUES = ("pass", "fail")
LOSS_COMPONENT_VALUES = ("generator", "discriminator")
DIVERGENCE_VALUES = ("kl", "js", "ks", "tvd", "w1")
SUBMISSION_REASON_VALUES = ("credentials", "validation", "rate_limit", "budget", "other")
OPERATION_VALUES = ("sampler", "estimator", "backend_run", "device_execute", "transpile", "probe")

# Most distinct values an open label (backend, model, ...) takes before new ones fold into "other".
DEFAULT_LABEL_LIMIT = 64
OVERFLOW_VALUE = "other"

_DURATION_JOB = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_DURATION_TRANSPILE = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_DURATION_QUEUE = (0.1, 1.0, 5.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0)
_DURATION_EXEC = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_DEPTH = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
_WIDTH = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 27.0, 33.0, 50.0, 65.0, 100.0, 127.0, 156.0)
_TWO_Q = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


@dataclass(frozen=True)
class Metric:
    """One Prometheus series family, declared once."""

    name: str
    kind: Kind
    unit: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None
    # Labels whose values are a closed enumeration (never folded by the cardinality guard).
    closed: tuple[str, ...] = ()

    @property
    def client_name(self) -> str:
        """The name prometheus_client wants (it appends ``_total`` to counters itself)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _m(name: str, kind: Kind, unit: str, help: str, labels: tuple[str, ...] = (), **kw) -> Metric:  # noqa: A002
    return Metric(name, kind, unit, help, labels, **kw)


METRICS: tuple[Metric, ...] = (
    # --- jobs and circuits -----------------------------------------------------------------
    _m("qobs_jobs_total", "counter", "1",
       "Quantum jobs finished, by final status (ok, error, cancelled, blocked by a budget).",
       ("backend", "provider", "operation", "status"), closed=("operation", "status")),
    _m("qobs_submission_errors_total", "counter", "1",
       "Jobs refused at submission (never ran), by reason (credentials, validation, rate_limit, budget, other).",
       ("backend", "provider", "reason"), closed=("reason",)),
    _m("qobs_circuits_total", "counter", "1", "Circuits (pubs x parameter bindings counted once per circuit) executed.",
       ("backend", "provider", "operation"), closed=("operation",)),
    _m("qobs_shots_total", "counter", "1", "Shots actually executed (from the result, not the request).",
       ("backend", "provider", "purpose"), closed=("purpose",)),
    _m("qobs_analytic_circuits_total", "counter", "1", "Circuits evaluated analytically (zero shots).",
       ("backend", "provider", "purpose"), closed=("purpose",)),
    _m("qobs_circuit_depth", "histogram", "1", "Depth of executed circuits (after transpilation when known).",
       ("backend",), buckets=_DEPTH),
    _m("qobs_circuit_width_qubits", "histogram", "qubits", "Number of qubits of executed circuits.",
       ("backend",), buckets=_WIDTH),
    _m("qobs_circuit_two_qubit_gates", "histogram", "1", "Two-qubit gates in executed circuits.",
       ("backend",), buckets=_TWO_Q),
    _m("qobs_transpile_duration_seconds", "histogram", "s", "Wall time of transpilation / pass-manager runs.",
       ("backend",), buckets=_DURATION_TRANSPILE),
    _m("qobs_queue_duration_seconds", "histogram", "s", "Time a job waited in the provider's queue.",
       ("backend",), buckets=_DURATION_QUEUE),
    _m("qobs_execution_duration_seconds", "histogram", "s", "Time a job spent executing on the backend.",
       ("backend",), buckets=_DURATION_EXEC),
    _m("qobs_job_duration_seconds", "histogram", "s", "End-to-end job time, submission to result.",
       ("backend", "operation"), buckets=_DURATION_JOB, closed=("operation",)),
    # --- cost and budgets --------------------------------------------------------------------
    _m("qobs_cost_usd_total", "counter", "USD", "Money spent on jobs, by where the figure came from.",
       ("backend", "source"), closed=("source",)),
    _m("qobs_unpriced_jobs_total", "counter", "1", "Jobs on a backend with no price in the catalog.", ("backend",)),
    _m("qobs_samples_total", "counter", "1", "Usable generated samples (cost per sample = cost / samples).",
       ("model",)),
    _m("qobs_shot_budget_limit_shots", "gauge", "1", "Shot budget limit for the current budget period.", ("budget",)),
    _m("qobs_shot_budget_used_shots", "gauge", "1", "Shots used in the current budget period.", ("budget",)),
    _m("qobs_money_budget_limit_usd", "gauge", "USD", "Money budget limit for the current budget period.",
       ("budget",)),
    _m("qobs_money_budget_used_usd", "gauge", "USD", "Money used in the current budget period.", ("budget",)),
    # --- fidelity and calibration ----------------------------------------------------------
    _m("qobs_fidelity", "gauge", "1", "Latest Hellinger fidelity of measured counts against the ideal distribution.",
       ("backend",)),
    _m("qobs_fidelity_baseline", "gauge", "1", "Fidelity baseline the checks compare against.", ("backend",)),
    _m("qobs_fidelity_checks_total", "counter", "1", "Fidelity checks, by result against the tolerance.",
       ("backend", "result"), closed=("result",)),
    _m("qobs_calibration_age_seconds", "gauge", "s", "Age of the backend's calibration at run time.", ("backend",)),
    _m("qobs_backend_readout_error", "gauge", "1", "Mean readout error over the backend's qubits.", ("backend",)),
    _m("qobs_backend_two_qubit_error", "gauge", "1", "Mean two-qubit gate error over the backend's pairs.",
       ("backend",)),
    _m("qobs_backend_t1_seconds", "gauge", "s", "Mean T1 over the backend's qubits.", ("backend",)),
    _m("qobs_backend_t2_seconds", "gauge", "s", "Mean T2 over the backend's qubits.", ("backend",)),
    # --- training health ---------------------------------------------------------------------
    _m("qobs_training_steps_total", "counter", "1", "Training steps completed.", ("model",)),
    _m("qobs_training_loss", "gauge", "1", "Latest training loss, generator and discriminator apart.",
       ("model", "component"), closed=("component",)),
    _m("qobs_gradient_norm", "gauge", "1", "L2 norm of the latest generator gradient.", ("model",)),
    _m("qobs_gradient_snr", "gauge", "1",
       "Gradient signal-to-noise ratio (mean |g| over its shot standard error); below 1 suggests a barren plateau.",
       ("model",)),
    _m("qobs_model_divergence", "gauge", "1", "Divergence of generated from target distribution.",
       ("model", "metric"), closed=("metric",)),
    _m("qobs_sample_entropy_bits", "gauge", "bit", "Shannon entropy of generated samples (mode-collapse signal).",
       ("model",)),
    _m("qobs_shot_noise", "gauge", "1", "Standard error of the shot-estimated distribution (max over bins).",
       ("model",)),
    # --- qobs itself ---------------------------------------------------------------------------
    _m("qobs_internal_errors_total", "counter", "1", "Failures inside qobs, contained and not seen by the user.",
       ("component",)),
    _m("qobs_label_overflow_total", "counter", "1", "Label values folded into 'other' by the cardinality guard.",
       ("metric", "label")),
    _m("qobs_build_info", "gauge", "1", "Always 1; labels carry qobs, Python and SDK versions.",
       ("version", "python", "qiskit", "pennylane")),
)

METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def metric(name: str) -> Metric:
    """Look up a declared metric; a typo fails loudly here, not silently in a dashboard."""
    return METRICS_BY_NAME[name]


def exposition_names(m: Metric) -> tuple[str, ...]:
    """Every sample name the metric produces in a Prometheus text exposition."""
    if m.kind == "histogram":
        return (f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count")
    if m.kind == "counter":
        return (m.name, m.client_name + "_created")
    return (m.name,)


# --- spans --------------------------------------------------------------------------------------
class Span:
    """Span names. Job spans are named ``"{operation} {backend}"`` like GenAI's ``"{operation} {model}"``."""

    RUN = "qobs.run"
    TRAINING_STEP = "qobs.training.step"
    GENERATOR_STEP = "qobs.training.generator"
    DISCRIMINATOR_STEP = "qobs.training.discriminator"
    EVALUATION = "qobs.training.evaluation"
    TRANSPILE = "quantum.transpile"
    PROBE = "qobs.probe"

    @staticmethod
    def job(operation: str, backend: str) -> str:
        return f"{operation} {backend}"


@dataclass(frozen=True)
class Attribute:
    """One span attribute, declared once with its type and meaning."""

    key: str
    type: str
    doc: str


class Attr:
    """Span attribute keys (``quantum.*`` for what any quantum SDK has, ``qobs.*`` for ours)."""

    OPERATION = "quantum.operation.name"
    PROVIDER = "quantum.provider.name"
    BACKEND = "quantum.backend.name"
    SIMULATOR = "quantum.backend.simulator"
    JOB_ID = "quantum.job.id"
    SESSION_ID = "quantum.session.id"
    JOB_STATUS = "quantum.job.status"
    CIRCUITS = "quantum.request.circuits"
    BINDINGS = "quantum.request.parameter_bindings"
    SHOTS_REQUESTED = "quantum.request.shots"
    SHOTS = "quantum.response.shots"
    PRECISION = "quantum.request.precision"
    PURPOSE = "quantum.request.purpose"
    WIDTH = "quantum.circuit.width"
    DEPTH = "quantum.circuit.depth"
    TWO_QUBIT_GATES = "quantum.circuit.two_qubit_gates"
    DEPTH_BEFORE = "quantum.circuit.depth_before_transpile"
    TRAINABLE_PARAMS = "quantum.circuit.trainable_parameters"
    TRANSPILE_S = "quantum.job.transpile_duration"
    QUEUE_S = "quantum.job.queue_duration"
    EXECUTION_S = "quantum.job.execution_duration"
    COST_AMOUNT = "qobs.cost.amount"
    COST_CURRENCY = "qobs.cost.currency"
    COST_SOURCE = "qobs.cost.source"
    COST_REASON = "qobs.cost.reason"
    SUBMISSION_REASON = "qobs.submission.reason"
    ANALYTIC = "quantum.request.analytic"
    REROUTED_FROM = "qobs.submission.rerouted_from"
    REROUTE_REASON = "qobs.submission.reroute_reason"
    RUN_ID = "qobs.run.id"
    MODEL = "qobs.model.name"
    STEP = "qobs.training.step"
    PARAMETERS = "qobs.job.parameters"
    COUNTS = "qobs.job.counts"
    ERROR_TYPE = "error.type"


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(Attr.OPERATION, "string", "sampler, estimator, backend_run, device_execute, transpile or probe."),
    Attribute(Attr.PROVIDER, "string", "Who runs the backend: aer, qiskit, ibm, pennylane, qobs.sim, ..."),
    Attribute(Attr.BACKEND, "string", "Backend or device name (aer_simulator, default.qubit, ibm_torino, ...)."),
    Attribute(Attr.SIMULATOR, "boolean", "True when the backend is a simulator."),
    Attribute(Attr.JOB_ID, "string", "Provider's job id (span attribute only, never a metric label)."),
    Attribute(Attr.SESSION_ID, "string", "Provider session or batch id, when there is one."),
    Attribute(Attr.JOB_STATUS, "string", "ok, error, cancelled or blocked (refused by a budget of the user's)."),
    Attribute(Attr.CIRCUITS, "int", "Circuits executed by the job (pubs x parameter bindings)."),
    Attribute(Attr.BINDINGS, "int", "Parameter bindings across the job's pubs."),
    Attribute(Attr.SHOTS_REQUESTED, "int", "Shots requested per circuit."),
    Attribute(Attr.SHOTS, "int", "Shots actually executed in total, read from the result."),
    Attribute(Attr.PRECISION, "double", "Estimator target precision."),
    Attribute(Attr.PURPOSE, "string", "forward, gradient or probe."),
    Attribute(Attr.WIDTH, "int", "Widest executed circuit, in qubits."),
    Attribute(Attr.DEPTH, "int", "Deepest executed circuit (after transpilation)."),
    Attribute(Attr.TWO_QUBIT_GATES, "int", "Most two-qubit gates in one executed circuit."),
    Attribute(Attr.DEPTH_BEFORE, "int", "Depth before transpilation, when the adapter saw both."),
    Attribute(Attr.TRAINABLE_PARAMS, "int", "Trainable parameters of the circuit."),
    Attribute(Attr.TRANSPILE_S, "double", "Transpile seconds attributed to the job."),
    Attribute(Attr.QUEUE_S, "double", "Seconds in the provider queue (absent when unknown)."),
    Attribute(Attr.EXECUTION_S, "double", "Seconds executing (absent when unknown)."),
    Attribute(Attr.COST_AMOUNT, "double", "Cost of the job."),
    Attribute(Attr.COST_CURRENCY, "string", "ISO 4217 currency of the cost (USD)."),
    Attribute(Attr.COST_SOURCE, "string", "catalog, provider or estimate."),
    Attribute(Attr.COST_REASON, "string", "Why a job cost zero or is unpriced (failed, cancelled, refused, no price)."),
    Attribute(Attr.SUBMISSION_REASON, "string", "Why a submission was refused."),
    Attribute(Attr.ANALYTIC, "boolean", "True when every circuit of the job was evaluated analytically (no shots)."),
    Attribute(Attr.REROUTED_FROM, "string", "Backend a guard rerouted the job away from (it ran on the fallback)."),
    Attribute(Attr.REROUTE_REASON, "string", "Why the job was rerouted (the guard's reason)."),
    Attribute(Attr.RUN_ID, "string", "qobs run id (joins spans to the run store)."),
    Attribute(Attr.MODEL, "string", "Model name of a training loop."),
    Attribute(Attr.STEP, "int", "Training step number."),
    Attribute(Attr.PARAMETERS, "string", "Opt-in (QOBS_RECORD_PARAMETERS): JSON list of each executed circuit's "
              "numeric gate parameters (first 8 circuits, 256 values each)."),
    Attribute(Attr.COUNTS, "string", "Opt-in (QOBS_RECORD_RESULTS): JSON list of each executed circuit's measured "
              "counts (first 8 circuits, 64 most frequent outcomes each)."),
    Attribute(Attr.ERROR_TYPE, "string", "Exception class or provider error code (OpenTelemetry's error.type)."),
)


def markdown() -> str:
    """Render the contract as Markdown (the docs are generated from here)."""
    lines = ["# qobs SLI contract", "", "Generated by `qobs contract`; do not edit.", "",
             "| series | type | unit | labels | help |", "| --- | --- | --- | --- | --- |"]
    for m in METRICS:
        lines.append(f"| `{m.name}` | {m.kind} | {m.unit} | {', '.join(m.labels)} | {m.help} |")
    lines += ["", "| span attribute | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{a.key}` | {a.type} | {a.doc} |" for a in ATTRIBUTES]
    lines += ["", "| SLO threshold | series | bucket bound |", "| --- | --- | --- |"]
    lines += [f"| {k} | `{s}` | {b:g} |" for k, (s, b) in SLO_THRESHOLDS.items()]
    return "\n".join(lines) + "\n"
