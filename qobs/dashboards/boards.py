"""The three qobs dashboards: executive (is it worth it), on-call (is it broken), debug (why).

Every expression is built from ``qobs.contract`` through ``qobs.dashboards.promql``; thresholds
drawn on latency panels are the contract's ``SLO_THRESHOLDS``.
"""

from __future__ import annotations

from typing import Any

from qobs.dashboards.grafana import Dashboard, Target, panel, thresholds, variables
from qobs.dashboards.promql import (
    BACKEND,
    MODEL,
    OBJECTIVE,
    RANGE,
    bad_ratio,
    by,
    fraction_under,
    good_ratio,
    heatmap,
    increase,
    quantile,
    rate,
    series,
    threshold,
)

# Figures the contract does not declare (they mirror the defaults of the alert rules' SLO spec).
OBJECTIVES = ("0.999", "0.995", "0.99", "0.98", "0.95")
DEFAULT_OBJECTIVE = "0.99"
BURN_FAST = ("1h", 14.4)   # page: 2% of a 30-day budget gone in an hour
BURN_SLOW = ("6h", 6.0)    # page: 5% of a 30-day budget gone in six hours
CALIBRATION_MAX_AGE_S = 86_400.0
FIDELITY_DROP = 0.1
BARREN_PLATEAU_SNR = 1.0

SIM = threshold("sample_latency_simulator")
HW = threshold("sample_latency_hardware")
JOB = "qobs_job_duration_seconds"
JOBS = "qobs_jobs_total"

OK = series(JOBS, 'status="ok"', BACKEND)
ERRORS = series(JOBS, 'status="error"', BACKEND)
# Cancelled or budget-blocked jobs count neither way (as in the SLO).
FINISHED = series(JOBS, 'status!~"cancelled|blocked"', BACKEND)


def _vars() -> list[dict[str, Any]]:
    return variables(f"label_values({series(JOBS)}, backend)",
                     f"label_values({series('qobs_training_steps_total')}, model)",
                     OBJECTIVES, DEFAULT_OBJECTIVE)


def _gauge(name: str, group: str, agg: str = "max") -> str:
    return by((group,), series(name), agg)


def _p50_p95(name: str) -> list[Target]:
    return [Target(quantile(q, name, BACKEND, group=("backend",)), f"p{round(q * 100)} {{{{backend}}}}")
            for q in (0.5, 0.95)]


def executive() -> Dashboard:
    d = Dashboard("qobs-executive", "qobs / Executive",
                  "Is quantum ML delivering within its SLO and its budget? Reliability, volume, spend, quality.",
                  ("qobs", "executive"), _vars(), time_from="now-30d")
    d.row("Reliability")
    ok_30d = good_ratio(OK, FINISHED, window="30d")
    d.add(
        panel("stat", "Job success (30d)",
              "Share of finished jobs (cancelled excluded) that ended ok over the last 30 days, the window of the "
              "job-success SLO. Red below 95%, green from 99%. If it is under the objective, open the on-call "
              "dashboard: the error-ratio and burn-rate panels show which backend spends the budget.",
              [Target(ok_30d, "success", instant=True)], unit="percentunit", decimals=2, w=6,
              steps=thresholds((0.95, "orange"), (0.99, "green"), base="red")),
        panel("stat", "Error budget left (30d)",
              "Share of the 30-day error budget (1 - objective, objective picked above) not yet spent. Below 0 "
              "the SLO is broken for this window: freeze risky changes and review with the on-call owner.",
              [Target(f"1 - (1 - {ok_30d}) / (1 - {OBJECTIVE})", "budget left", instant=True)],
              unit="percentunit", decimals=1, w=6,
              steps=thresholds((0.0, "orange"), (0.25, "green"), base="red")),
        panel("timeseries", "Job success ratio vs SLO objective",
              "Daily rolling success ratio (cancelled excluded) against the objective (dashed). A dip under "
              "the line that lasts spends the budget fast: see the on-call burn-rate panel.",
              [Target(good_ratio(OK, FINISHED, window="1d"), "success (1d rolling)"),
               Target(f"vector({OBJECTIVE})", "objective")], unit="percentunit", max=1, w=12),
    )
    d.row("Volume and spend")
    cost = series("qobs_cost_usd_total", BACKEND)
    samples = series("qobs_samples_total", MODEL)
    shots = series("qobs_shots_total", BACKEND)
    d.add(
        panel("stat", "Jobs in range", "Jobs finished in the selected time range, any status (ok, error, cancelled, "
              "blocked by a budget).",
              [Target(by((), increase(series(JOBS, BACKEND), RANGE)), "jobs", instant=True)], w=6),
        panel("stat", "Shots in range",
              "Shots actually executed (read from results, not requests) in the selected time range.",
              [Target(by((), increase(shots, RANGE)), "shots", instant=True)], w=6),
        panel("stat", "Spend in range",
              "Money spent on jobs in the selected range (catalog prices, provider figures or estimates). "
              "Compare with the money budget below; unpriced jobs are on the debug dashboard.",
              [Target(by((), increase(cost, RANGE)), "USD", instant=True)], unit="currencyUSD", decimals=2, w=6),
        panel("stat", "Cost per sample in range",
              "Spend divided by usable generated samples over the range. Rising while samples stay flat means "
              "shots are being wasted (retries, gradient evaluations, probes): check shots by purpose.",
              [Target(f"{by((), increase(cost, RANGE))} / {by((), increase(samples, RANGE))}", "USD/sample",
                      instant=True)], unit="currencyUSD", decimals=4, w=6),
        panel("timeseries", "Shots per second by backend",
              "Execution volume per backend. A sudden jump usually is a training loop with more shots or more "
              "gradient evaluations; a drop to zero with jobs still submitted means jobs are failing.",
              [Target(by(("backend",), rate(shots)), "{{backend}}")], unit="short", stack=True, w=8),
        panel("timeseries", "Spend rate by backend (USD/hour)",
              "Money per hour per backend. Hardware backends dominate; if a simulator shows spend, check the "
              "price catalog.",
              [Target(f"{by(('backend',), rate(cost))} * 3600", "{{backend}}")], unit="currencyUSD", stack=True,
              w=8),
        panel("timeseries", "Cost per sample",
              "sum(rate(cost)) / sum(rate(samples)): what one usable generated sample costs right now. Use it "
              "to compare backends and shot settings; a steady rise is the signal to review the training setup.",
              [Target(f"{by((), rate(cost))} / {by((), rate(samples))}", "USD/sample")], unit="currencyUSD",
              decimals=5, w=8),
    )
    d.row("Budgets")
    budget_steps = thresholds((0.75, "orange"), (0.9, "red"))
    d.add(
        panel("gauge", "Shot budget used",
              "Shots used over the limit of each declared shot budget in the current period. At 100% a "
              "blocking budget refuses jobs and a rerouting one sends them to its fallback: raise the limit or "
              "slow down before then.",
              [Target(f"{_gauge('qobs_shot_budget_used_shots', 'budget')} / "
                      f"{_gauge('qobs_shot_budget_limit_shots', 'budget')}", "{{budget}}")],
              unit="percentunit", min=0, max=1, steps=budget_steps, w=12),
        panel("gauge", "Money budget used",
              "Money used over the limit of each declared money budget in the current period. Same rules as "
              "the shot budget: agree a new limit before it reaches 100%.",
              [Target(f"{_gauge('qobs_money_budget_used_usd', 'budget')} / "
                      f"{_gauge('qobs_money_budget_limit_usd', 'budget')}", "{{budget}}")],
              unit="percentunit", min=0, max=1, steps=budget_steps, w=12),
    )
    d.row("Quality and training")
    d.add(
        panel("timeseries", "Fidelity vs baseline",
              "Latest Hellinger fidelity of probe circuits against the ideal distribution, with the baseline "
              "the checks compare against. A gap wider than 0.1 means the backend has drifted: results from "
              "it are less trustworthy until recalibration.",
              [Target(by(("backend",), series("qobs_fidelity", BACKEND), "max"), "{{backend}} fidelity"),
               Target(by(("backend",), series("qobs_fidelity_baseline", BACKEND), "max"), "{{backend}} baseline")],
              unit="percentunit", min=0, max=1, w=12),
        panel("timeseries", "Training progress (KL divergence)",
              "KL divergence of the generated from the target distribution per model: lower is better. Flat "
              "for long while cost keeps growing means training has stalled (see gradient SNR on debug).",
              [Target(by(("model",), series("qobs_model_divergence", MODEL, 'metric="kl"'), "max"), "{{model}}")],
              min=0, w=12),
    )
    return d


def oncall() -> Dashboard:
    d = Dashboard("qobs-oncall", "qobs / On-call",
                  "Is something broken right now, where, and how fast is it spending the error budget?",
                  ("qobs", "on-call"), _vars(), time_from="now-6h")
    d.row("Failures")
    burn = [Target(f"({bad_ratio(ERRORS, FINISHED, ('backend',), window=w)}) / (1 - {OBJECTIVE})",
                   f"{w} {{{{backend}}}}") for w, _ in (BURN_FAST, BURN_SLOW)]
    d.add(
        panel("timeseries", "Job error ratio by backend",
              "Share of finished jobs that ended in error (cancelled excluded). One backend high: check its "
              "status page and credentials; all backends high: suspect the code or the SDK version (build "
              "info on the debug dashboard).",
              [Target(bad_ratio(ERRORS, FINISHED, ("backend",)), "{{backend}}")], unit="percentunit", min=0,
              w=12),
        panel("timeseries", "Error-budget burn rate (1h / 6h)",
              f"Error ratio over the window divided by the budget (1 - objective). 1 spends the 30-day budget "
              f"in exactly 30 days. Above {BURN_FAST[1]:g} on 1h or {BURN_SLOW[1]:g} on 6h the burn-rate alert "
              f"pages: find the backend here and the reason in the panels below.",
              burn, min=0, w=12, steps=thresholds((BURN_SLOW[1], "orange"), (BURN_FAST[1], "red"))),
        panel("timeseries", "Submission errors by reason",
              "Jobs refused before they ran. credentials: rotate the token; rate_limit: slow the submitter; "
              "budget: a blocking budget is exhausted (see the executive dashboard); validation: the circuit "
              "does not fit the backend.",
              [Target(by(("backend", "reason"), rate(series("qobs_submission_errors_total", BACKEND))),
                      "{{backend}} {{reason}}")], unit="ops", stack=True, w=12),
        panel("timeseries", "Jobs per second by status",
              "Finished jobs per second, ok / error / cancelled. Traffic dropping to zero while users work "
              "means jobs are not reaching qobs (instrumentation off or the process not scraped).",
              [Target(by(("status",), rate(series(JOBS, BACKEND))), "{{status}}")], unit="ops", stack=True,
              w=12),
    )
    d.row("Latency vs SLO thresholds")
    d.add(
        panel("timeseries", "Job duration p50 / p95",
              f"End-to-end job time (histogram_quantile over buckets, interpolated). Dashed lines: the "
              f"simulator SLO threshold {SIM:g} s and the hardware one {HW:g} s. p95 over the line on a "
              f"simulator: CPU contention or oversized circuits (debug dashboard: depth, width, threads).",
              _p50_p95(JOB), unit="s", min=0, w=12,
              steps=thresholds((SIM, "orange"), (HW, "red"))),
        panel("timeseries", "Jobs within latency thresholds",
              f"Exact share of jobs that finished within {SIM:g} s and {HW:g} s (bucket bounds by contract, no "
              f"interpolation): this is what the latency SLOs count. Below the objective for long: the latency "
              f"SLO alert will follow.",
              [Target(fraction_under(JOB, SIM, BACKEND, group=("backend",)), f"<= {SIM:g} s {{{{backend}}}}"),
               Target(fraction_under(JOB, HW, BACKEND, group=("backend",)), f"<= {HW:g} s {{{{backend}}}}")],
              unit="percentunit", min=0, max=1, w=12),
        panel("timeseries", "Queue time p95",
              f"Time jobs wait in the provider's queue (hardware only; simulators report none). Over "
              f"{threshold('queue_interactive'):g} s interactive work stalls; over "
              f"{threshold('queue_batch'):g} s move batch work to a less loaded backend or a reservation.",
              [Target(quantile(0.95, "qobs_queue_duration_seconds", BACKEND, group=("backend",)),
                      "p95 {{backend}}")], unit="s", min=0, w=12,
              steps=thresholds((threshold("queue_interactive"), "orange"), (threshold("queue_batch"), "red"))),
        panel("stat", "Calibration age",
              "Age of each backend's calibration when jobs last ran. Over a day the error figures (and the "
              "fidelity baseline) are stale: expect drift, re-run the fidelity probe after recalibration.",
              [Target(by(("backend",), series("qobs_calibration_age_seconds", BACKEND), "max"), "{{backend}}")],
              unit="s", w=12, steps=thresholds((CALIBRATION_MAX_AGE_S, "red"))),
    )
    d.row("Quality")
    d.add(
        panel("timeseries", "Fidelity checks failing",
              "Share of fidelity checks that failed their tolerance against the baseline. Sustained failures "
              "on one backend: it has drifted; pause training there or reroute to another backend.",
              [Target(bad_ratio(series("qobs_fidelity_checks_total", 'result="fail"', BACKEND),
                                series("qobs_fidelity_checks_total", BACKEND), ("backend",)), "{{backend}}")],
              unit="percentunit", min=0, max=1, w=12),
        panel("timeseries", "Fidelity drop below baseline",
              f"Baseline minus latest fidelity. Over {FIDELITY_DROP:g} (dashed) the drift alert fires; compare "
              f"with calibration age and the backend error figures on the debug dashboard.",
              [Target(f"{by(('backend',), series('qobs_fidelity_baseline', BACKEND), 'max')} - "
                      f"{by(('backend',), series('qobs_fidelity', BACKEND), 'max')}", "{{backend}}")],
              w=12, steps=thresholds((FIDELITY_DROP, "red"))),
    )
    d.row("qobs itself")
    d.add(
        panel("timeseries", "qobs internal errors",
              "Failures inside qobs, contained (users never see them) but meaning some telemetry is missing. "
              "Any steady rate: read the component, check the process log and report it.",
              [Target(by(("component",), increase(series("qobs_internal_errors_total"))), "{{component}}")],
              min=0, w=12, steps=thresholds((1, "red"))),
        panel("timeseries", "Label values folded into 'other'",
              "The cardinality guard folded new label values into 'other' (too many distinct backends or "
              "models). Per-backend panels are incomplete: raise the label limit or stop using per-run names "
              "as backend/model names.",
              [Target(by(("metric", "label"), increase(series("qobs_label_overflow_total"))),
                      "{{metric}} {{label}}")], min=0, w=12, steps=thresholds((1, "orange"))),
    )
    return d


def debug() -> Dashboard:
    d = Dashboard("qobs-debug", "qobs / Debug",
                  "Why: workload mix, circuit shape, where job time goes, backend calibration, training health.",
                  ("qobs", "debug"), _vars(), time_from="now-1h")
    d.row("Workload")
    d.add(
        panel("timeseries", "Shots per second by backend and purpose",
              "forward: sampling the model; gradient: parameter-shift and similar evaluations; probe: fidelity "
              "probes. Gradient shots dwarfing forward ones is the usual reason for high cost per sample.",
              [Target(by(("backend", "purpose"), rate(series("qobs_shots_total", BACKEND))),
                      "{{backend}} {{purpose}}")], stack=True, w=12),
        panel("timeseries", "Circuits per second by backend and operation",
              "Circuits executed (pubs x parameter bindings) per operation. Many circuits with few shots each "
              "favour batching bindings into fewer jobs.",
              [Target(by(("backend", "operation"), rate(series("qobs_circuits_total", BACKEND))),
                      "{{backend}} {{operation}}")], stack=True, w=12),
        panel("timeseries", "Analytic circuits per second",
              "Circuits evaluated exactly (zero shots, e.g. statevector gradients). They cost no shots but do "
              "not behave like hardware: check before comparing with shot-based runs.",
              [Target(by(("backend", "purpose"), rate(series("qobs_analytic_circuits_total", BACKEND))),
                      "{{backend}} {{purpose}}")], w=12),
        panel("timeseries", "Unpriced jobs",
              "Jobs on backends with no price in the catalog: their spend is missing from every cost panel. "
              "Add the backend to the price catalog.",
              [Target(by(("backend",), increase(series("qobs_unpriced_jobs_total", BACKEND))), "{{backend}}")],
              min=0, w=12),
    )
    d.row("Circuit shape")
    for name, title, what in (
        ("qobs_circuit_depth", "Circuit depth", "Depth after transpilation. Deeper circuits collect more noise; "
         "a shift up after an SDK or backend change points at the transpiler."),
        ("qobs_circuit_width_qubits", "Circuit width (qubits)", "Qubits per executed circuit. Simulation cost "
         "doubles per qubit: a wider ansatz explains slower simulator jobs."),
        ("qobs_circuit_two_qubit_gates", "Two-qubit gates per circuit", "Two-qubit gates dominate hardware error; "
         "a rise after transpilation means routing added SWAPs (check the layout / coupling map)."),
    ):
        d.add(panel("heatmap", title, what + " Heatmap of circuits per bucket.",
                    [Target(heatmap(name, BACKEND), "{{le}}", fmt="heatmap")], w=8))
    d.add(
        panel("timeseries", "Circuit depth p50 / p95",
              "Depth quantiles per backend (interpolated within buckets).",
              _p50_p95("qobs_circuit_depth"), min=0, w=12),
        panel("timeseries", "Width and two-qubit gates p95",
              "p95 of qubits and of two-qubit gates per circuit, per backend.",
              [Target(quantile(0.95, "qobs_circuit_width_qubits", BACKEND, group=("backend",)),
                      "qubits {{backend}}"),
               Target(quantile(0.95, "qobs_circuit_two_qubit_gates", BACKEND, group=("backend",)),
                      "2q gates {{backend}}")], min=0, w=12),
    )
    d.row("Where job time goes")
    d.add(
        panel("timeseries", "Transpile duration p50 / p95",
              f"Transpilation wall time. Over {threshold('transpile'):g} s (dashed): lower the optimisation "
              f"level or cache transpiled circuits instead of transpiling per step.",
              _p50_p95("qobs_transpile_duration_seconds"), unit="s", min=0, w=8,
              steps=thresholds((threshold("transpile"), "red"))),
        panel("timeseries", "Queue duration p50 / p95",
              "Time in the provider's queue (absent for local simulators). Compare with execution time: "
              "queue-bound work gains from sessions or batching, not from faster circuits.",
              _p50_p95("qobs_queue_duration_seconds"), unit="s", min=0, w=8),
        panel("timeseries", "Execution duration p50 / p95",
              "Time executing on the backend. Job duration minus transpile, queue and execution is qobs and "
              "SDK overhead plus result handling.",
              _p50_p95("qobs_execution_duration_seconds"), unit="s", min=0, w=8),
        panel("heatmap", "Job duration",
              f"End-to-end job time per bucket; bucket bounds include the SLO thresholds {SIM:g} s and {HW:g} s. "
              f"Two bands usually mean two kinds of job (simulator vs hardware, forward vs gradient).",
              [Target(heatmap(JOB, BACKEND), "{{le}}", fmt="heatmap")], unit="s", w=24),
    )
    d.row("Backend calibration")
    d.add(
        panel("timeseries", "Readout and two-qubit error",
              "Mean readout and two-qubit gate error of each backend as reported at run time. A step up "
              "explains a fidelity drop; pick the backend with the lower figures for sensitive runs.",
              [Target(by(("backend",), series("qobs_backend_readout_error", BACKEND), "max"), "readout {{backend}}"),
               Target(by(("backend",), series("qobs_backend_two_qubit_error", BACKEND), "max"),
                      "2q {{backend}}")], unit="percentunit", min=0, w=12),
        panel("timeseries", "T1 / T2",
              "Mean coherence times. Circuits much longer than T2 decohere: reduce depth or choose another "
              "backend.",
              [Target(by(("backend",), series("qobs_backend_t1_seconds", BACKEND), "max"), "T1 {{backend}}"),
               Target(by(("backend",), series("qobs_backend_t2_seconds", BACKEND), "max"), "T2 {{backend}}")],
              unit="s", min=0, w=12),
    )
    d.row("Training health")
    d.add(
        panel("timeseries", "Gradient norm",
              "L2 norm of the latest generator gradient. Collapsing towards zero together with a low SNR is "
              "a barren plateau; exploding norms call for a smaller learning rate.",
              [Target(by(("model",), series("qobs_gradient_norm", MODEL), "max"), "{{model}}")], min=0, w=8),
        panel("timeseries", "Gradient SNR (barren plateau below 1)",
              f"Mean |gradient| over its shot standard error. Below {BARREN_PLATEAU_SNR:g} (dashed) the gradient "
              f"is shot noise: more shots only delay it. Change the ansatz, initialisation or cost function.",
              [Target(by(("model",), series("qobs_gradient_snr", MODEL), "max"), "{{model}}")], min=0, w=8,
              steps=thresholds((BARREN_PLATEAU_SNR, "green"), base="red")),
        panel("timeseries", "Training steps per second",
              "Training throughput per model. A drop with steady job latency means time goes outside quantum "
              "jobs (classical optimiser, data loading).",
              [Target(by(("model",), rate(series("qobs_training_steps_total", MODEL))), "{{model}}")], unit="ops",
              w=8),
        panel("timeseries", "Losses (generator / discriminator)",
              "Latest generator and discriminator loss. The discriminator loss falling to ~0 while the "
              "generator's climbs means the discriminator wins: rebalance their learning rates or steps.",
              [Target(by(("model", "component"), series("qobs_training_loss", MODEL), "max"),
                      "{{model}} {{component}}")], w=12),
        panel("timeseries", "Divergences",
              "Every divergence of generated from target distribution (kl, js, ks, tvd, w1): lower is better.",
              [Target(by(("model", "metric"), series("qobs_model_divergence", MODEL), "max"),
                      "{{model}} {{metric}}")], min=0, w=12),
        panel("timeseries", "Sample entropy (bits)",
              "Shannon entropy of generated samples. A sharp fall is mode collapse: the generator emits few "
              "outcomes.",
              [Target(by(("model",), series("qobs_sample_entropy_bits", MODEL), "max"), "{{model}}")], min=0,
              w=12),
        panel("timeseries", "Shot noise",
              "Standard error of the shot-estimated distribution (max over bins). When it is as large as the "
              "divergence you are trying to reduce, add shots before drawing conclusions.",
              [Target(by(("model",), series("qobs_shot_noise", MODEL), "max"), "{{model}}")], min=0, w=12),
    )
    d.row("Build")
    d.add(panel("table", "qobs build info",
                "qobs, Python, Qiskit and PennyLane versions of every scraped process. Two versions at once "
                "during an incident: suspect the rollout.",
                [Target(series("qobs_build_info"), instant=True, fmt="table")], w=24, h=5,
                transformations=[{"id": "organize", "options": {"excludeByName": {
                    "Time": True, "Value": True, "__name__": True}}}]))
    return d


BOARDS = {"qobs-executive": executive, "qobs-oncall": oncall, "qobs-debug": debug}
