"""``qobs report``: a postmortem of one recorded run, read from the embedded store.

What a person on call wants after a bad run, in the order they ask: what went wrong (findings,
each with the figure behind it), when (a timeline of errors and events relative to the start),
where (errors by backend and type, latency and queue percentiles), what it cost, and how training
went. ``--json`` gives the same as data. Reads the store only; imports no SDK.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from decimal import Decimal
from typing import Any

import click

from qobs.store import _quantile, group_quantiles, resolve_run, rows, run_summary, snapshot

# Finding thresholds (a report flags, it does not page: the SLO rules are the alerting contract).
ERROR_RATIO_WARN = 0.01
SNR_LOW = 1.0
ENTROPY_COLLAPSE_BITS = 0.5
TIMELINE_LIMIT = 40


def build(conn: sqlite3.Connection, run_ref: str) -> dict[str, Any]:
    """The report of one run as data (what ``--json`` prints)."""
    run = resolve_run(conn, run_ref)
    rid = run["run_id"]
    summary = run_summary(conn, rid)
    # Jobs are aggregated by SQLite (a run may hold millions); steps and events are few enough to read.
    steps, events = rows(conn, "steps", rid), rows(conn, "events", rid)
    t0 = run["started_at"]
    errors = _errors(conn, rid)
    return {
        "run": run,
        "findings": _run_end(run) + _findings(summary, errors, steps, events),
        "timeline": _timeline(conn, rid, t0, errors, events),
        "errors": [{k: v for k, v in e.items() if not k.startswith("_")} for e in errors],
        "latency": _latency(conn, rid),
        "cost": _cost(conn, rid, steps),
        "training": _training(steps),
        "totals": summary["totals"],
        "backends": summary["backends"],
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _run_end(run: dict[str, Any]) -> list[str]:
    """How the run ended, when that is the first thing to know: it failed or was interrupted."""
    status, code = run.get("status"), run.get("exit_code")
    if status in ("failed", "interrupted"):
        return [f"the run {'was interrupted' if status == 'interrupted' else 'failed'}"
                + (f" (exit code {code})" if code not in (None, 0) else "")]
    return []


def _findings(summary: dict[str, Any], errors: list[dict], steps: list[dict], events: list[dict]) -> list[str]:
    out: list[str] = []
    for name, b in summary["backends"].items():
        finished = b["jobs"] - b["blocked"] - b["cancelled"]  # as the SLO counts: blocked jobs are policy
        if finished and b["errors"] / finished > ERROR_RATIO_WARN:
            out.append(f"{name}: {b['errors']} of {finished} jobs failed ({b['errors'] / finished:.1%})")
        if b["cancelled"]:
            out.append(f"{name}: {_plural(b['cancelled'], 'job')} cancelled")
        if b["unpriced_jobs"] and b["unpriced_jobs"] == b["jobs"] and b["provider"] not in ("aer", "qiskit"):
            n = _plural(b["unpriced_jobs"], "job")
            out.append(f"{name}: no price in the catalog ({n} not in the cost figures)")
    refused: Counter[str] = Counter()
    for e in sorted(errors, key=lambda e: e["_first_id"]):  # ties: in order of first occurrence
        if e["submission_reason"]:
            refused[e["submission_reason"]] += e["jobs"]
    for reason, n in refused.most_common():
        out.append(f"{_plural(n, 'submission')} refused ({reason})")
    checks = [e for e in events if e["kind"] == "fidelity_check"]
    failed = [e for e in checks if (e["data"] or {}).get("result") == "fail"]
    if failed:
        worst = min(failed, key=lambda e: e["data"]["fidelity"])
        out.append(f"fidelity: {len(failed)} of {len(checks)} checks failed (lowest {worst['data']['fidelity']:.3f} "
                   f"on {worst['subject']}, baseline {worst['data'].get('baseline') or 0:.3f})")
    changes = [e for e in events if e["kind"] == "calibration_change"]
    if changes:
        out.append(f"calibration changed {_plural(len(changes), 'time')} during the run "
                   f"({', '.join(sorted({e['subject'] or '?' for e in changes}))})")
    for e in events:
        if e["kind"] == "budget_threshold":
            d = e["data"] or {}
            out.append(f"budget {e['subject']}: {d.get('percent', '?')}% of its {d.get('kind', '')} used "
                       f"({d.get('used')} of {d.get('limit')})")
        elif e["kind"] in ("budget_refused", "budget_fallback", "budget_exceeded"):
            what = (e["data"] or {}).get("request")
            out.append(f"budget {e['subject']}: {e['kind'].removeprefix('budget_')} ({what})")
    tail = [s["metrics"] or {} for s in steps[-max(1, len(steps) // 10):]]
    snr = [m["grad_snr"] for m in tail if "grad_snr" in m]
    if snr and max(snr) < SNR_LOW:
        out.append(f"training: gradient SNR stayed below {SNR_LOW:g} over the last {len(snr)} steps "
                   f"(max {max(snr):.2f}): gradients lost in shot noise")
    ent = [m["entropy_bits"] for m in tail if "entropy_bits" in m]
    if ent and max(ent) < ENTROPY_COLLAPSE_BITS:
        out.append(f"training: sample entropy {max(ent):.2f} bits over the last steps (mode collapse?)")
    return out


def _timeline(conn: sqlite3.Connection, rid: str, t0: float, errors: list[dict],
              events: list[dict]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    ends = [conn.execute(f"SELECT ts, backend FROM jobs WHERE run_id = ? ORDER BY id {order} LIMIT 1",
                         (rid,)).fetchone() for order in ("ASC", "DESC")]
    if ends[0] is not None:
        items.append({"t": ends[0]["ts"] - t0, "what": f"first job on {ends[0]['backend']}"})
    kinds: dict[tuple[Any, ...], dict[str, Any]] = {}  # the first of each kind of failure, then a count
    for e in sorted(errors, key=lambda e: e["_first_id"]):
        k = kinds.setdefault((e["backend"], e["status"], e["error_type"], e["submission_reason"]),
                             {"ts": e["_first_ts"], "n": 0})
        k["n"] += e["jobs"]
    for (backend, status, error_type, reason), k in kinds.items():
        why = error_type or status
        if reason:
            why += f", refused at submission ({reason})"
        items.append({"t": k["ts"] - t0, "what": f"first {status} on {backend}: {why} ({k['n']} in all)"})
    for e in events:
        if e["kind"] == "calibration_snapshot" or (e["kind"] == "fidelity_check"
                                                    and (e["data"] or {}).get("result") == "pass"):
            continue
        data = e["data"] or {}
        detail = ", ".join(f"{k}={_short(v)}" for k, v in list(data.items())[:4])
        items.append({"t": e["ts"] - t0, "what": f"{e['kind']} {e['subject'] or ''}".strip() + (f": {detail}"
                                                                                                  if detail else "")})
    if ends[1] is not None:
        items.append({"t": ends[1]["ts"] - t0, "what": f"last job on {ends[1]['backend']}"})
    items.sort(key=lambda x: x["t"])
    return items[:TIMELINE_LIMIT]


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)[:40]


def _errors(conn: sqlite3.Connection, rid: str) -> list[dict[str, Any]]:
    """Jobs not ok, by backend, operation, status, error type and refusal reason: most first (ties: the
    kind seen first). ``_first_id``/``_first_ts``: the kind's first job (for the timeline)."""
    # ts beside MIN(id): a bare column takes the row of the minimum
    rows_ = conn.execute(
        "SELECT backend, operation, status, error_type, submission_reason, COUNT(*) AS n, MIN(id) AS first_id, ts "
        "FROM jobs WHERE run_id = ? AND status != 'ok' GROUP BY 1, 2, 3, 4, 5 ORDER BY n DESC, first_id",
        (rid,)).fetchall()
    return [{"backend": r["backend"], "operation": r["operation"], "status": r["status"],
             "error_type": r["error_type"], "submission_reason": r["submission_reason"], "jobs": r["n"],
             "_first_id": r["first_id"], "_first_ts": r["ts"]} for r in rows_]


def _latency(conn: sqlite3.Connection, rid: str) -> list[dict[str, Any]]:
    key = "json_array(backend, operation)"  # one text key per group, NULL kept apart from ""
    groups = conn.execute(f"SELECT {key} AS k, backend, operation, COUNT(*) AS n, COUNT(duration_s) AS n_dur, "
                          "COUNT(queue_s) AS n_queue FROM jobs WHERE run_id = ? GROUP BY 1 ORDER BY 2, 3",
                          (rid,)).fetchall()
    d = group_quantiles(conn, "duration_s", key, rid, {g["k"]: g["n_dur"] for g in groups}, (0.5, 0.95, 0.99))
    q = group_quantiles(conn, "queue_s", key, rid, {g["k"]: g["n_queue"] for g in groups}, (0.95,))
    return [{"backend": g["backend"], "operation": g["operation"], "jobs": g["n"], "p50_s": d[g["k"]][0],
             "p95_s": d[g["k"]][1], "p99_s": d[g["k"]][2], "queue_p95_s": q[g["k"]][0]} for g in groups]


def _cost(conn: sqlite3.Connection, rid: str, steps: list[dict]) -> dict[str, Any]:
    total = sum((Decimal(c) * n for c, n in conn.execute(
        "SELECT cost, COUNT(*) FROM jobs WHERE run_id = ? AND cost IS NOT NULL GROUP BY cost", (rid,))), Decimal(0))
    first = conn.execute("SELECT cost_currency FROM jobs WHERE run_id = ? AND cost IS NOT NULL ORDER BY id LIMIT 1",
                         (rid,)).fetchone()
    shots, unpriced = conn.execute("SELECT COALESCE(SUM(shots), 0), COALESCE(SUM(cost IS NULL), 0) FROM jobs "
                                   "WHERE run_id = ?", (rid,)).fetchone()
    samples = sum(s["samples"] or 0 for s in steps)
    return {"total": str(total), "currency": first[0] if first is not None else "USD", "samples": samples,
            "shots": shots, "per_sample": f"{total / samples:.6g}" if samples else None, "unpriced_jobs": unpriced}


def _training(steps: list[dict]) -> dict[str, Any] | None:
    if not steps:
        return None
    models = sorted({s["model"] for s in steps})
    out: dict[str, Any] = {"steps": len(steps), "models": models}
    # The exact KL (of the model's distribution, as the reference QGAN records it) when steps carry it, else
    # the KL estimated from the step's samples (shot noise included): said which in ``kl_kind``.
    for key, kind in (("exact_kl", "exact"), ("kl", "sampled")):
        kl = [(s["step"], s["metrics"][key]) for s in steps if s["metrics"] and key in s["metrics"]]
        if kl:
            best = min(kl, key=lambda x: x[1])
            out.update(kl_kind=kind, first_kl=kl[0][1], last_kl=kl[-1][1], best_kl=best[1], best_step=best[0])
            break
    last = steps[-1]["metrics"] or {}
    out["last"] = {k: last[k] for k in ("g_loss", "d_loss", "grad_norm", "grad_snr", "entropy_bits", "ks")
                   if k in last}
    d = [s["duration_s"] for s in steps if s["duration_s"] is not None]
    out["step_p50_s"], out["step_p95_s"] = _quantile(d, 0.5), _quantile(d, 0.95)
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms" if v < 10 else f"{v:.1f} s"


def render(r: dict[str, Any]) -> str:
    run = r["run"]
    dur = f"{run['ended_at'] - run['started_at']:.1f} s" if run.get("ended_at") else "no end recorded (cut off?)"
    lines = [f"postmortem of run {run['run_id']}" + (f" ({run['name']})" if run.get("name") else ""),
             f"  status {run.get('status')}" + (f", exit {run['exit_code']}" if run.get("exit_code") is not None
                                                 else "") + f"; {dur}; {' '.join(run.get('argv') or [])}", ""]
    lines.append("findings:" if r["findings"] else "findings: none (no errors, refusals, drift or budget events)")
    lines += [f"  - {f}" for f in r["findings"]]
    if r["timeline"]:
        lines += ["", "timeline (from the run's start):"]
        lines += [f"  +{_clock(x['t'])}  {x['what']}" for x in r["timeline"]]
    if r["errors"]:
        lines += ["", "errors:", f"  {'BACKEND':<22} {'OPERATION':<14} {'STATUS':<10} {'TYPE':<24} JOBS"]
        for e in r["errors"]:
            kind = e["error_type"] or "-"
            if e["submission_reason"]:
                kind += f" ({e['submission_reason']})"
            lines.append(f"  {e['backend']:<22} {e['operation']:<14} {e['status']:<10} {kind:<24} {e['jobs']}")
    if r["latency"]:
        lines += ["", "job time and queue:", f"  {'BACKEND':<22} {'OPERATION':<14} {'JOBS':>6} {'p50':>10} "
                      f"{'p95':>10} {'p99':>10} {'QUEUE p95':>10}"]
        for x in r["latency"]:
            lines.append(f"  {x['backend']:<22} {x['operation']:<14} {x['jobs']:>6} {_ms(x['p50_s']):>10} "
                         f"{_ms(x['p95_s']):>10} {_ms(x['p99_s']):>10} {_ms(x['queue_p95_s']):>10}")
    c = r["cost"]
    per = f", {c['per_sample']} per sample" if c["per_sample"] is not None else ""
    lines += ["", f"cost: {c['total']} {c['currency']} for {c['shots']} shots{per}"
              + (f"; {_plural(c['unpriced_jobs'], 'job')} unpriced" if c["unpriced_jobs"] else "")]
    t = r["training"]
    if t:
        name = "exact KL" if t.get("kl_kind") == "exact" else "KL (from samples)"
        kl = (f"; {name} {t['first_kl']:.4f} -> {t['last_kl']:.4f} (best {t['best_kl']:.4f} at step "
              f"{t['best_step']})" if "first_kl" in t else "")
        lines.append(f"training: {t['steps']} steps of {', '.join(t['models'])}{kl}; step p50 {_ms(t['step_p50_s'])}")
    return "\n".join(lines)


def _clock(t: float) -> str:
    t = max(t, 0.0)
    return f"{int(t // 60):02d}:{t % 60:06.3f}"


@click.command()
@click.argument("run_ref", default="latest")
@click.option("--store", help="Run store path (default: $QOBS_STORE or ./.qobs/runs.db).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def report(run_ref: str, store: str | None, as_json: bool) -> None:
    """Postmortem of one run (RUN id, prefix, or 'latest'): findings, timeline, errors, latency, cost."""
    from qobs.cli import _open_store

    with snapshot(_open_store(store)) as conn:
        r = build(conn, run_ref)
    click.echo(json.dumps(r, indent=2, default=str) if as_json else render(r))
