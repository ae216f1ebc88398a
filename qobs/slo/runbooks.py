"""Runbooks generated beside the rules: one Markdown page per alert, from the rules themselves.

Each page says what fired (the alert's expressions, severities and labels as generated), what it
means, how to look (PromQL over contract series, the dashboards, ``qobs runs show``) and what to do.
The guidance per alert kind is written here once; everything else is read off the generated rules,
so a page never disagrees with the rule it documents. ``runbook_url`` should point at where these
pages are published (``{alert}`` is the page name without ``.md``).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from qobs.fidelity import EPOCH_RECHECK_S

# Per alert kind: (what it means, how to look, what to do). Keys are alert-name suffixes or names.
_GUIDE: dict[str, tuple[str, list[str], list[str]]] = {
    "BudgetBurn": (
        "The SLO's error budget is being spent faster than its window allows. A page tier (by default 14.4x over "
        "1h, 6x over 6h) means the budget runs out within days at this rate; a ticket tier (by default 3x over "
        "1d, 1x over 3d) means a slow leak. The tiers in force are the rules below.",
        ["Which SLO and tier: the `slo` and `burnrate_tier` labels; the grouping labels say which backend.",
         "On-call dashboard (qobs-oncall): error-budget burn, job success by backend, submission errors by reason.",
         "`sum by (backend, status) (increase(qobs_jobs_total[1h]))` and "
         "`sum by (backend, reason) (increase(qobs_submission_errors_total[1h]))` over the contract series.",
         "The run behind it: `qobs runs show latest` (errors per backend, error types) on the machine that ran it.",
         "Jobs a budget blocked (`status=\"blocked\"`, `reason=\"budget\"`) burn no SLO's budget: the budget "
         "alerts and `qobs budgets status` cover them."],
        ["Provider outage or maintenance: move work to another backend or a simulator (a `fallback` budget "
         "reroutes automatically) and silence the page for the maintenance window.",
         "Credentials expired (`reason=\"credentials\"`): renew the token; nothing else will recover.",
         "Validation errors after a code or SDK change: roll back, or fix the circuits (unbound parameters, "
         "gates the target does not support: transpile for the backend).",
         "Latency SLOs: check queue time and shots per job; larger batches or fewer shots bring job time down."],
    ),
    "SLIAbsent": (
        "The SLI's series are missing, so the SLO cannot be evaluated: no alert of this SLO can fire while it lasts.",
        ["Is the exporter up? `up{job=...}` for the scrape target, or the Pushgateway's last push time.",
         "Did the job run at all? `qobs runs list` on the machine; an idle queue is normal for low-traffic work.",
         "Is qobs on? `qobs.instrument()` or `qobs run -- ...`, and `OTEL_METRICS_EXPORTER=prometheus` or "
         "`QOBS_PUSHGATEWAY_URL` for the metrics to leave the process."],
        ["Restore the scrape or push; for expected quiet periods schedule `qobs probe` so that the SLI keeps "
         "steady synthetic traffic, or silence the alert."],
    ),
    "QobsShotBudgetConsumed": (
        "A shot budget crossed one of its thresholds for the current period. Each threshold is its own band, so one "
        "crossing raises one ticket.",
        ["`qobs budgets` shows every budget, its period, what is used and what is left.",
         "Executive dashboard (qobs-executive): shots per second by backend, cost per sample.",
         "`sum by (backend) (increase(qobs_shots_total[1d]))`: who spends the shots."],
        ["Expected spend: acknowledge. Unexpected: look for runaway loops (shots per step), a larger shot count "
         "than intended, or probe traffic; lower shots or switch the budget to `block` or `fallback`."],
    ),
    "QobsMoneyBudgetConsumed": (
        "A money budget crossed one of its thresholds for the current period.",
        ["`qobs budgets`; `sum by (backend, source) (increase(qobs_cost_usd_total[1d]))` for where the money goes "
         "and whether the figures are catalog prices, provider-reported or estimates.",
         "`qobs_unpriced_jobs_total`: jobs with no price are not in this figure at all."],
        ["As for shots; check the price catalog (`QOBS_PRICES`) against the provider's current prices."],
    ),
    "QobsSpendRateHigh": (
        "Spending over the last window is well above the same window a week earlier.",
        ["`sum by (backend) (increase(qobs_cost_usd_total[1d]))` against the same with `offset 1w`.",
         "New runs or users: `qobs runs list`; a backend moved from a simulator to hardware."],
        ["Confirm the spend is intended; otherwise stop the runs, or set a `block` budget."],
    ),
    "QobsFidelityDrift": (
        "Measured counts on the backend agree less with the ideal distribution than at baseline: the device's "
        "calibration drifted, or it is being used with a different noise profile.",
        ["Debug dashboard (qobs-debug): fidelity against baseline, calibration age, readout and two-qubit error.",
         "`qobs_backend_readout_error` and `qobs_backend_two_qubit_error` for the backend; calibration change "
         "events in `qobs runs show latest`.",
         "`qobs probe --backend NAME` runs the reference circuit now for a clean reading."],
        ["Wait for the provider's next calibration, or move to a better-calibrated device; results trained "
         "through the drift may need to be re-evaluated.",
         "`qobs fidelity baselines` shows each backend's baseline and when it was learnt; if it is wrong "
         "(learnt on a bad day) or the device was recalibrated for good, `qobs fidelity rebaseline BACKEND` "
         f"lets the next checks learn a new one (running processes notice within {EPOCH_RECHECK_S:.0f} s), "
         "or pin it with `QOBS_FIDELITY_BASELINE`."],
    ),
    "QobsCalibrationStale": (
        "The calibration data the backend reported at run time is older than the limit.",
        ["`qobs_calibration_age_seconds` by backend; the provider's status page for maintenance."],
        ["Prefer a freshly calibrated device for fidelity-sensitive work; raise the limit if the provider "
         "calibrates less often."],
    ),
    "QobsBarrenPlateau": (
        "The gradient signal-to-noise ratio of the model has stayed below the limit: gradients are lost in shot "
        "noise and training has stalled (a barren plateau, or too few shots).",
        ["Debug dashboard: gradient norm and SNR, losses, divergences; `qobs runs show latest` (training steps)."],
        ["More shots per gradient circuit, a shallower or local-cost ansatz, a different initialisation, or a "
         "smaller learning rate; stop the run if it burns budget without progress."],
    ),
    "QobsQueueTimeHigh": (
        "The p95 of time spent in the provider's queue is above the threshold.",
        ["`histogram_quantile(0.95, sum by (backend, le) (rate(qobs_queue_duration_seconds_bucket[1h])))`; the "
         "provider's queue and reservations."],
        ["Use a reservation or session, another device, or schedule the work off-peak."],
    ),
}


def _guide(alert: str) -> tuple[str, list[str], list[str]]:
    if alert in _GUIDE:
        return _GUIDE[alert]
    for suffix in ("BudgetBurn", "SLIAbsent"):
        if alert.endswith(suffix):
            return _GUIDE[suffix]
    raise KeyError(f"no runbook guidance for alert {alert}")


def build(rule_files: dict[str, str]) -> dict[str, str]:
    """``runbooks/{alert}.md`` -> text, for every alert in the generated rule files."""
    rules: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(rule_files):
        for group in yaml.safe_load(rule_files[name])["groups"]:
            for r in group["rules"]:
                if "alert" in r:
                    rules.setdefault(r["alert"], []).append({**r, "file": name})
    return {f"runbooks/{alert}.md": _page(alert, rs) for alert, rs in sorted(rules.items())}


def _page(alert: str, rs: list[dict[str, Any]]) -> str:
    meaning, look, act = _guide(alert)
    summaries = sorted({re.sub(r"\{\{ \$labels\.(\w+) \}\}", r"<\1>", r["annotations"]["summary"]) for r in rs})
    slos = sorted({r["labels"]["slo"] for r in rs if "slo" in r.get("labels", {})})
    lines = [f"# {alert}", "", "<!-- generated by `qobs alerts build`; do not edit -->", "",
             *([*(f"> {x}" for x in summaries), ""] if len(summaries) <= 3 else []),
             *([f"SLOs: {', '.join(slos)}.", ""] if slos else []),
             "## What it means", "", meaning, "", "## Rules", ""]
    for r in rs:
        labels = ", ".join(f"{k}={v}" for k, v in r.get("labels", {}).items())
        pending = f", for {r['for']}" if "for" in r else ""
        lines += [f"- `{r['file']}`: {labels}{pending}", "", "  ```promql",
                  *("  " + x for x in r["expr"].rstrip().splitlines()), "  ```", ""]
    lines += ["## How to look", "", *(f"- {x}" for x in look), "", "## What to do", "", *(f"- {x}" for x in act), ""]
    return "\n".join(lines)
