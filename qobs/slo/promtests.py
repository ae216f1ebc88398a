"""promtool unit-test suites generated from an SLO spec, proving what the alerts do.

For every SLO and every burn-rate tier: a burn at exactly the tier's factor pages (or tickets) at the
end of its long window and not a minute before, and clears within the short window once the errors
stop; a burn at the lowest ticket factor raises only ticket tiers; one failure out of two jobs does
not page (the minimum-event guard); missing series raise only the ``absent()`` alert. For the health
alerts: each budget band fires alone, spend rate against the previous week, fidelity drift,
stale calibration, barren plateau and queue p95 fire after their ``for`` and not before.

Expected alerts come from an exact model of the rules (fractions, Prometheus' inclusive range
windows, series sampled every minute from value 0, so ``increase`` is never extrapolated). The
generator also asserts the intent (for instance that the guard is what stops the low-traffic page),
so a rule change that breaks the intent fails at generation, and one that breaks the rules' real
behaviour fails in promtool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from qobs import contract
from qobs.slo import rules as R
from qobs.slo.spec import EXAMPLE_FILL, SLO, BurnTier, Spec, fmt_duration, fmt_number

HEALTH_STEP = 60  # seconds between samples and rule evaluations in the health-alert tests


def slo_step(slo: SLO) -> int:
    """Sample and evaluation interval of an SLO's tests: the gcd of its windows (5m for the defaults).

    Every window is then a whole number of samples, so ``increase`` is never extrapolated and ratios
    are exact; a coarser step keeps 6-day scenarios cheap for promtool.
    """
    import math

    xs = [slo.window_s, *(t.long_s for t in slo.tiers), *(t.short_s for t in slo.tiers),
          *(t.for_s for t in slo.tiers if t.for_s), *([slo.absent_for_s] if slo.absent_for_s else [])]
    return math.gcd(*xs)


def humanize_percentage(v: float) -> str:
    """Go's ``fmt.Sprintf("%.4g%%", v*100)`` (Prometheus' humanizePercentage)."""
    return "%.4g%%" % (v * 100)


def render(template: str, labels: dict[str, str], value: float) -> str:
    """Expand the few template forms the generated annotations use."""
    out = template.replace("{{ $value | humanizePercentage }}", humanize_percentage(value))
    for k, v in labels.items():
        out = out.replace(f"{{{{ $labels.{k} }}}}", v)
    assert "{{" not in out, out
    return out


# --- series ------------------------------------------------------------------------------------
@dataclass
class Phase:
    steps: int
    good: int
    bad: int


def counter_values(incs: list[int]) -> str:
    """``a+bxN`` text for a counter starting at 0 and growing by ``incs[i]`` at step i+1."""
    parts, cur, i = ["0"], 0, 0
    while i < len(incs):
        j = i
        while j < len(incs) and incs[j] == incs[i]:
            j += 1
        d, n = incs[i], j - i
        parts.append(f"{cur + d}+{d}x{n - 1}")
        cur += d * n
        i = j
    return " ".join(parts)


def _expand(phases: list[Phase]) -> tuple[list[int], list[int]]:
    good, bad = [], []
    for p in phases:
        good += [p.good] * p.steps
        bad += [p.bad] * p.steps
    return good, bad


def _labels(slo: SLO, metric: str, **extra: str) -> dict[str, str]:
    fill = {**EXAMPLE_FILL, **dict(slo.example_labels), **extra}
    return {lbl: fill[lbl] for lbl in contract.metric(metric).labels if lbl in fill}


def _series(name: str, labels: dict[str, str], incs: list[int]) -> dict[str, str]:
    body = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{body}}}", "values": counter_values(incs)}


def slo_series(slo: SLO, phases: list[Phase]) -> list[dict[str, str]]:
    """Input series for good and bad events of an SLO's SLI (cumulative counters, one sample a minute)."""
    good, bad = _expand(phases)
    tot = [g + b for g, b in zip(good, bad, strict=True)]
    s = slo.sli
    if s.name == "job_success":
        m = "qobs_jobs_total"
        # Jobs a budget blocked ride along in bulk and must move no burn rate (they are policy, not failures).
        return [_series(m, _labels(slo, m, status="ok"), good), _series(m, _labels(slo, m, status="error"), bad),
                _series(m, _labels(slo, m, status="blocked"), [3 * (g + b) for g, b in zip(good, bad, strict=True)])]
    if s.name == "submission_errors":
        m = "qobs_jobs_total"
        e = "qobs_submission_errors_total"
        blocked = [3 * (g + b) for g, b in zip(good, bad, strict=True)]  # budget refusals in bulk: no burn
        return [_series(m, _labels(slo, m, status="ok"), good), _series(m, _labels(slo, m, status="error"), bad),
                _series(e, _labels(slo, e), bad), _series(m, _labels(slo, m, status="blocked"), blocked),
                _series(e, _labels(slo, e, reason="budget"), blocked)]
    if s.name == "fidelity_checks":
        m = "qobs_fidelity_checks_total"
        return [_series(m, _labels(slo, m, result="pass"), good), _series(m, _labels(slo, m, result="fail"), bad)]
    if s.kind == "latency":
        assert slo.threshold is not None
        m = s.total_metric
        lb = _labels(slo, m)
        return [_series(f"{m}_count", lb, tot), _series(f"{m}_bucket", {**lb, "le": R.le_value(slo.threshold)}, good),
                _series(f"{m}_bucket", {**lb, "le": "+Inf"}, tot)]
    raise ValueError(f"no generated series for SLI {s.name}")


# --- exact model of the burn-rate rules --------------------------------------------------------
class Model:
    """What the SLO's burn-rate alerts do on a scenario, evaluated every minute."""

    def __init__(self, slo: SLO, phases: list[Phase], min_events: int | None = None) -> None:
        self.slo = slo
        self.step = slo_step(slo)
        self.min_events = slo.min_events if min_events is None else min_events
        good, bad = _expand(phases)
        self.cb, self.ct = [0], [0]
        for g, b in zip(good, bad, strict=True):
            self.cb.append(self.cb[-1] + b)
            self.ct.append(self.ct[-1] + g + b)
        self.end = len(self.cb) - 1
        self._cond: dict[tuple[str, int], bool] = {}

    def _inc(self, c: list[int], t: int, w_s: int) -> int | None:
        if t < 1:
            return None  # one sample: increase() has no result
        return c[t] - c[max(0, t - w_s // self.step)]

    def ratio(self, t: int, w_s: int) -> Fraction | None:
        total = self._inc(self.ct, t, w_s)
        if not total:
            return None  # 0/0 is NaN: no comparison is true
        return Fraction(self._inc(self.cb, t, w_s) or 0, total)

    def cond(self, tier: BurnTier, t: int) -> bool:
        key = (tier.name, t)
        if key not in self._cond:
            thr = R.threshold(self.slo, tier)
            lr, sr = self.ratio(t, tier.long_s), self.ratio(t, tier.short_s)
            ev = self._inc(self.ct, t, tier.long_s)
            ok = lr is not None and sr is not None and lr >= thr and sr >= thr
            if self.min_events:
                ok = ok and ev is not None and ev >= self.min_events
            self._cond[key] = ok
        return self._cond[key]

    def firing(self, tier: BurnTier, t: int) -> bool:
        k = tier.for_s // self.step
        return t - k >= 0 and all(self.cond(tier, u) for u in range(t - k, t + 1))

    def alerts(self, t: int) -> list[tuple[BurnTier, Fraction]]:
        return [(tr, self.ratio(t, tr.long_s)) for tr in self.slo.tiers if self.firing(tr, t)]  # type: ignore[misc]


def _at(t: int, step: int) -> str:
    return fmt_duration(t * step) if t else "0s"


# --- test groups -----------------------------------------------------------------------------
def _burn_alert_case(spec: Spec, slo: SLO, model: Model, t: int) -> dict[str, Any]:
    group = {lbl: dict(slo.example_labels).get(lbl, EXAMPLE_FILL.get(lbl, "")) for lbl in slo.group_by}
    rule = {r["labels"]["burnrate_tier"]: r for r in R.slo_group(spec, slo)["rules"]
            if r.get("alert") == R.burn_alert_name(slo)}
    exp = []
    for tier, value in model.alerts(t):
        r = rule[tier.name]
        labels = {**group, **r["labels"]}
        exp.append({"exp_labels": labels,
                    "exp_annotations": {k: render(v, labels, float(value)) for k, v in r["annotations"].items()}})
    return {"eval_time": _at(t, model.step), "alertname": R.burn_alert_name(slo), "exp_alerts": exp}


def _alerts_query(slo_name: str | None, t: int, exp: list[dict[str, str]], step: int = HEALTH_STEP) -> dict[str, Any]:
    slo_matcher = f', slo="{slo_name}"' if slo_name else ""
    sel = f'ALERTS{{alertstate="firing"{slo_matcher}}}'
    samples = []
    for labels in exp:
        body = ", ".join(f'{k}="{v}"' for k, v in sorted({"alertstate": "firing", **labels}.items()))
        samples.append({"labels": f"ALERTS{{{body}}}", "value": 1})
    return {"expr": sel, "eval_time": _at(t, step), "exp_samples": samples}


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"generated test would not prove its claim: {what}")


def slo_tests(spec: Spec, slo: SLO) -> list[dict[str, Any]]:
    """Test groups for one SLO (empty for SLIs the generator cannot feed, such as custom ratios)."""
    if slo.sli.kind == "ratio":
        return []
    groups: list[dict[str, Any]] = []
    thr_of: Callable[[BurnTier], Fraction] = lambda tr: R.threshold(slo, tr)  # noqa: E731
    step = slo_step(slo)
    interval = fmt_duration(step)

    def _m(seconds: int) -> int:
        return seconds // step
    # One burn per tier at exactly its factor. The burn at the lowest ticket factor (1x for 30d) also
    # proves that it raises only ticket tiers, so it runs past every tier's detection time.
    tickets = [t for t in slo.tiers if t.severity == "ticket"]
    pages = [t for t in slo.tiers if t.severity == "page"]
    lowest = None
    if tickets and (not pages or min(t.factor for t in tickets) < min(t.factor for t in pages)):
        lowest = min(tickets, key=lambda t: (t.factor, -t.long_s))
    longest = max((t.long_s + t.for_s for t in slo.tiers), default=0)
    for tier in slo.tiers:
        r = thr_of(tier)
        T, E = r.denominator, r.numerator
        only_ticket = tier is lowest
        warm = _m(longest if only_ticket else tier.long_s)
        burn = _m(max(longest, tier.long_s + tier.for_s) if only_ticket else tier.long_s + tier.for_s) + 10
        rec = _m(tier.short_s) + 2
        phases = [Phase(warm, T, 0), Phase(burn, T - E, E), Phase(rec, T, 0)]
        model = Model(slo, phases)
        t_detect = warm + _m(tier.long_s) + _m(tier.for_s)
        t_stop = warm + burn
        t_clear = t_stop + _m(tier.short_s)
        name = tier.name
        _check(not model.firing(tier, t_detect - 1), f"{name} silent before its detection time")
        _check(model.firing(tier, t_detect), f"{name} fires at its detection time")
        _check(model.firing(tier, t_stop), f"{name} still firing when the errors stop")
        _check(not model.firing(tier, t_clear), f"{name} cleared within the short window")
        times = {t_detect - 1, t_detect, t_stop, t_clear}
        title = (f"{slo.name}: a {R.show(tier.factor)}x burn raises {name} ({tier.severity}) after "
                 f"{fmt_duration(tier.long_s + tier.for_s)} and it clears within {fmt_duration(tier.short_s)}")
        if only_ticket:
            _check(all(not model.firing(p, t) for p in pages for t in range(model.end + 1)),
                   f"a {R.show(tier.factor)}x burn never pages")
            times |= {warm + _m(t.long_s + t.for_s) for t in slo.tiers}
            title += "; it raises only ticket tiers, never a page"
        groups.append({
            "name": title,
            "interval": interval,
            "input_series": slo_series(slo, phases),
            "alert_rule_test": [_burn_alert_case(spec, slo, model, t) for t in sorted(times)],
        })
    # Low traffic: one failed job out of two does not page.
    if slo.tiers:
        phases = [Phase(10, 0, 0), Phase(1, 1, 0), Phase(9, 0, 0), Phase(1, 0, 1), Phase(100, 0, 0)]
        model = Model(slo, phases)
        unguarded = Model(slo, phases, min_events=0)
        if slo.min_events > 2:
            _check(all(not model.alerts(t) for t in range(model.end + 1)), "low traffic never alerts")
            _check(any(unguarded.alerts(t) for t in range(model.end + 1)),
                   "without the minimum-event guard the low-traffic scenario would alert")
            groups.append({
                "name": f"{slo.name}: one failed job out of two does not page (guard: {slo.min_events} events)",
                "interval": interval,
                "input_series": slo_series(slo, phases),
                "promql_expr_test": [_alerts_query(slo.name, t, [], step) for t in (11, 21, 22, 26, 60, model.end)],
            })
    # Missing data: nothing but the absent() alert.
    if slo.absent_for_s:
        t_abs = _m(slo.absent_for_s)
        absent = next(r for r in R.slo_group(spec, slo)["rules"] if r.get("alert") == R.absent_alert_name(slo))
        eq = _equality_labels(R.sli_query(slo).total)
        labels = {**eq, **absent["labels"]}
        groups.append({
            "name": f"{slo.name}: missing series raise only {absent['alert']} after {fmt_duration(slo.absent_for_s)}",
            "interval": interval,
            "input_series": [{"series": 'qobs_build_info{version="test"}', "values": f"1x{t_abs + 5}"}],
            "alert_rule_test": [{"eval_time": fmt_duration(slo.absent_for_s), "alertname": absent["alert"],
                                 "exp_alerts": [{"exp_labels": labels, "exp_annotations": absent["annotations"]}]}],
            "promql_expr_test": [
                _alerts_query(slo.name, t_abs - 1, [], step),
                _alerts_query(slo.name, t_abs, [{"alertname": absent["alert"], **labels}], step),
            ],
        })
    return groups


def _equality_labels(selector: str) -> dict[str, str]:
    import re

    return dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', selector))


# --- health alerts ---------------------------------------------------------------------------------
def health_tests(spec: Spec) -> list[dict[str, Any]]:
    """Health-alert groups evaluated every minute (the spend-rate group is apart: see ``spend_tests``)."""
    h = spec.health

    def _m(seconds: int) -> int:
        return seconds // HEALTH_STEP

    sev = h.severity
    groups: list[dict[str, Any]] = []
    if h.budgets:
        ts = [Fraction(t) for t in h.budget_thresholds]
        for kind, used, limit in (("Shot", "qobs_shot_budget_used_shots", "qobs_shot_budget_limit_shots"),
                                  ("Money", "qobs_money_budget_used_usd", "qobs_money_budget_limit_usd")):
            name = f"Qobs{kind}BudgetConsumed"
            rule = {r["labels"]["threshold"]: r for r in R.health_group(spec)["rules"]  # type: ignore[index]
                    if r["alert"] == name}
            cases, queries = [], []
            first = int(ts[0] * 1000) - 1
            queries.append(_alerts_query(None, first, []))
            for i, t in enumerate(ts):
                hi = ts[i + 1] if i + 1 < len(ts) else Fraction(1)
                minute = int((t + hi) / 2 * 1000)
                pct = f"{R.show(t * 100)}%"
                labels = {"budget": "monthly", **rule[pct]["labels"]}
                value = minute / 1000
                exp = [{"exp_labels": labels,
                        "exp_annotations": {k: render(v, labels, value) for k, v in rule[pct]["annotations"].items()}}]
                cases.append({"eval_time": f"{minute}m", "alertname": name, "exp_alerts": exp})
                queries.append(_alerts_query(None, minute, [{"alertname": name, **labels}]))
            groups.append({
                "name": f"{name}: each threshold ({', '.join(R.show(t * 100) + '%' for t in ts)}) fires alone, once",
                "interval": "1m",
                "input_series": [{"series": f'{used}{{budget="monthly"}}', "values": "0+1x1000"},
                                 {"series": f'{limit}{{budget="monthly"}}', "values": "1000x1000"}],
                "alert_rule_test": cases, "promql_expr_test": queries,
            })
    if h.fidelity_drift:
        keep = 1 - Fraction(h.fidelity_drop)
        ok, bad = Fraction(9, 10) * (1 - Fraction(h.fidelity_drop) / 2), Fraction(9, 10) * keep * Fraction(9, 10)
        k = _m(h.fidelity_for_s)
        n = 30 + k + 10
        groups.append(_gauge_group("QobsFidelityDrift", "backend", "ibm_torino", sev,
                                   [("qobs_fidelity", f"{float(ok)}x29 " + f"{float(bad)}x{n - 30}"),
                                    ("qobs_fidelity_baseline", f"0.9x{n}")], 30 + k - 1, 30 + k))
    if h.calibration:
        k = _m(h.calibration_for_s)
        start = h.calibration_max_age_s - 600
        groups.append(_gauge_group("QobsCalibrationStale", "backend", "ibm_torino", sev,
                                   [("qobs_calibration_age_seconds", f"{start}+60x{11 + k + 10}")], 10 + k, 11 + k))
    if h.barren_plateau:
        k = _m(h.snr_for_s)
        low = float(Fraction(h.snr_below) / 2)
        groups.append(_gauge_group("QobsBarrenPlateau", "model", "qgan", sev,
                                   [("qobs_gradient_snr", f"{float(h.snr_below) * 2}x9 {low}x{k + 10}")],
                                   10 + k - 1, 10 + k))
    if h.queue_p95:
        k = _m(h.queue_for_s)
        w = _m(h.queue_window_s)
        buckets = contract.metric("qobs_queue_duration_seconds").buckets or ()
        slow_bound = min(b for b in buckets if b > h.queue_threshold_s)
        fast_bound = min(buckets)
        steps1, steps2 = w, w + k + 5
        series = []
        for b in (*buckets, float("inf")):
            fast = 20 if b >= fast_bound else 0
            inc = [fast] * steps1 + [(1 if b >= fast_bound else 0) + (19 if b >= slow_bound else 0)] * steps2
            series.append({"series": 'qobs_queue_duration_seconds_bucket{backend="ibm_torino", le="%s"}'
                                     % ("+Inf" if b == float("inf") else R.le_value(b)),
                           "values": counter_values(inc)})
        series.append({"series": 'qobs_queue_duration_seconds_count{backend="ibm_torino"}',
                       "values": counter_values([20] * (steps1 + steps2))})
        lab = {"alertname": "QobsQueueTimeHigh", "backend": "ibm_torino", "severity": sev}
        groups.append({
            "name": "QobsQueueTimeHigh: queue p95 above its threshold fires after its for, not on fast queues",
            "interval": "1m", "input_series": series,
            "promql_expr_test": [_alerts_query(None, steps1, []), _alerts_query(None, steps1 + w + k, [lab])],
        })
    return groups


def spend_tests(spec: Spec) -> list[dict[str, Any]]:
    """The spend-rate group: nine days of hourly samples, evaluated hourly (cheap for promtool)."""
    h, sev = spec.health, spec.health.severity
    rules = {r["alert"] for r in (R.health_group(spec) or {"rules": []})["rules"]}
    groups: list[dict[str, Any]] = []
    if h.spend_rate and h.spend_window_s % 3600 == 0 and h.spend_offset_s % 3600 == 0 and "QobsSpendRateHigh" in rules:
        hours_w = h.spend_window_s // 3600 or 1
        base_h = (h.spend_offset_s + h.spend_window_s) // 3600
        hi = Fraction(h.spend_factor) * 2 + 1
        usd = max(Fraction(h.spend_min_usd), Fraction(1))
        # 1 unit/h for offset+window hours, then (2*factor+1) units/h for one window.
        incs = [usd] * base_h + [usd * hi] * hours_w
        vals = "0 " + " ".join(fmt_number(sum(incs[: i + 1], Fraction(0))) for i in range(len(incs)))
        t_before, t_after = base_h * 60, (base_h + hours_w) * 60
        groups.append({
            "name": f"QobsSpendRateHigh: spend over {R.show(h.spend_factor)}x the previous week's rate fires",
            "interval": "1h",
            "input_series": [{"series": 'qobs_cost_usd_total{backend="ibm_torino", source="provider"}',
                              "values": vals}],
            "promql_expr_test": [_alerts_query(None, t_before, []),
                                 _alerts_query(None, t_after, [{"alertname": "QobsSpendRateHigh",
                                                                "severity": sev}])],
        })
    return groups


def _gauge_group(alert: str, label: str, value: str, sev: str, series: list[tuple[str, str]], t_silent: int,
                 t_fire: int) -> dict[str, Any]:
    lab = {"alertname": alert, label: value, "severity": sev}
    return {
        "name": f"{alert}: fires after its for and not before",
        "interval": "1m",
        "input_series": [{"series": f'{n}{{{label}="{value}"}}', "values": v} for n, v in series],
        "promql_expr_test": [_alerts_query(None, t_silent, []), _alerts_query(None, t_fire, [lab])],
    }


def build(spec: Spec, rule_files: dict[str, str], source: str | None = None) -> dict[str, str]:
    """Test file name (under ``tests/``) -> promtool test YAML, one per rule file."""
    header = R.HEADER.format(source=source or spec.source)
    out: dict[str, str] = {}
    for slo in spec.slos:
        fname = f"slo-{slo.name}.rules.yml"
        groups = slo_tests(spec, slo)
        if groups and fname in rule_files:
            out[fname.replace(".rules.yml", ".test.yml")] = header + R.dump(
                {"rule_files": [f"../{fname}"], "evaluation_interval": fmt_duration(slo_step(slo)), "tests": groups})
    if R.HEALTH_FILE in rule_files:
        groups = health_tests(spec)
        if groups:
            out[R.HEALTH_FILE.replace(".rules.yml", ".test.yml")] = header + R.dump(
                {"rule_files": [f"../{R.HEALTH_FILE}"], "evaluation_interval": "1m", "tests": groups})
        groups = spend_tests(spec)
        if groups:
            out["qobs-health-spend.test.yml"] = header + R.dump(
                {"rule_files": [f"../{R.HEALTH_FILE}"], "evaluation_interval": "1h", "tests": groups})
    return out
