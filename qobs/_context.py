"""Keys adapters put into ``JobRecord.context`` for listeners (never stored, never exported), and the
model whose training step is running.

A module of its own, importing nothing of qobs, so that listeners read the keys without importing the pipeline.
"""

from contextvars import ContextVar

# The model of the training step open in this context (``qobs.training.step``): jobs submitted inside it
# are that model's (``JobRecord.model``, ``SubmitRequest.model``: per-model cost and model-scoped budgets).
CURRENT_MODEL: ContextVar[str | None] = ContextVar("qobs_model", default=None)

CTX_BACKEND = "backend"      # the SDK backend/device object the job ran on
CTX_CIRCUITS = "circuits"    # executed circuits (Qiskit QuantumCircuit, bound; PennyLane QuantumScript)
CTX_COUNTS = "counts"        # list of {bitstring: count} per executed circuit, when the SDK gives counts
CTX_RESULT = "result"        # the SDK result object
CTX_METRICS = "job_metrics"  # provider job metrics (IBM runtime ``job.metrics()``), when available
CTX_CALIBRATION = "calibration"  # the backend's calibration snapshot when the job ended (qobs.calibration)
CTX_NOISE_MODEL = "noise_model"  # a noise model given to this job's run() alone (Aer), not the backend's
CTX_PROBE_DRAW = "probe_draw"  # the fidelity probe's sampling draw, made when the job was handed over
