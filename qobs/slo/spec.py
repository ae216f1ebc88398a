"""The SLO file: model, YAML loader and validator (native ``qobs/v1`` and OpenSLO v1 ``ratioMetric``).

Every problem is a ``ConfigError`` whose one-line message starts with the path of the field at fault
(``slos[0].objective: ...``), so the CLI can print it as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from qobs import contract
from qobs.errors import ConfigError

API_VERSION = "qobs/v1"
DEFAULT_RUNBOOK = "https://runbooks.example/qobs/{alert}"
BUNDLED = Path(__file__).with_name("default.yaml")

# Default objectives per tier (the field's guidance); an SLO file names the objective explicitly.
TIER_OBJECTIVES: dict[str, Decimal] = {"pipeline": Decimal("0.99"), "critical": Decimal("0.98"),
                                       "non-critical": Decimal("0.95")}
SEVERITIES = ("page", "ticket")

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:\d+[wdhms])+$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'^([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"$')
_SELECTOR = re.compile(r"^\s*(qobs_[a-z0-9_]+)\s*(?:\{(.*)\})?\s*$")


# --- durations ---------------------------------------------------------------------------------
def parse_duration(value: Any, where: str) -> int:
    """A Prometheus duration (``30d``, ``1h30m``, ``10s``) as whole seconds, > 0."""
    if isinstance(value, bool) or not isinstance(value, str) or not _DURATION.match(value.strip()):
        raise ConfigError(f"{where}: bad window {value!r}; expected a duration such as 30d, 28d, 7d, 6h, 5m or 30s")
    total = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([wdhms])", value.strip()))
    if total <= 0:
        raise ConfigError(f"{where}: bad window {value!r}; it must be longer than 0s")
    return total


def fmt_duration(seconds: int) -> str:
    """Seconds as the shortest single-unit Prometheus duration (``86400`` -> ``1d``; no weeks)."""
    for unit in ("d", "h", "m", "s"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    raise AssertionError(seconds)  # pragma: no cover - seconds are integers


def fmt_number(x: Fraction | Decimal | int) -> str:
    """An exact number for PromQL: a terminating decimal as such, any other rational as ``(n / d)``."""
    f = Fraction(x)
    d = f.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"({f.numerator} / {f.denominator})"
    s = format(Decimal(f.numerator) / Decimal(f.denominator), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


# --- SLI catalogue -------------------------------------------------------------------------------
SIMULATOR_BACKENDS = r"aer.*|.*simulator.*|default\\..*|lightning\\..*|fake_.*"


@dataclass(frozen=True)
class SLIKind:
    """One SLI of the closed set: how its bad and total events are counted from contract series."""

    name: str
    doc: str
    kind: str  # "status" (bad/total selectors on counters) or "latency" (histogram bucket vs count)
    total_metric: str
    bad_metric: str | None = None
    bad_matchers: tuple[str, ...] = ()
    total_matchers: tuple[str, ...] = ()
    threshold_key: str | None = None  # SLO_THRESHOLDS key for latency SLIs
    default_selector: tuple[str, ...] = ()
    # Label values the generated promtool tests use for the series (must satisfy the selector).
    example_labels: tuple[tuple[str, str], ...] = ()


SLIS: dict[str, SLIKind] = {s.name: s for s in (
    SLIKind("job_success", "Jobs that finish with status ok (cancelled jobs, and jobs a budget blocked, are not "
            "counted).", "status",
            "qobs_jobs_total", "qobs_jobs_total", ('status="error"',), ('status!~"cancelled|blocked"',),
            example_labels=(("backend", "ibm_torino"), ("provider", "ibm"), ("operation", "sampler"))),
    SLIKind("submission_errors", "Jobs refused at submission, over all jobs (a refusal by a budget of the user's "
            "is policy, not an error: neither counted bad nor in the total).", "status",
            "qobs_jobs_total", "qobs_submission_errors_total", ('reason!="budget"',), ('status!="blocked"',),
            example_labels=(("backend", "ibm_torino"), ("provider", "ibm"))),
    SLIKind("fidelity_checks", "Fidelity checks that pass their tolerance.", "status",
            "qobs_fidelity_checks_total", "qobs_fidelity_checks_total", ('result="fail"',), (),
            example_labels=(("backend", "ibm_torino"),)),
    SLIKind("sample_latency_simulator", "Simulator jobs finishing within 0.2 s.", "latency",
            "qobs_job_duration_seconds", threshold_key="sample_latency_simulator",
            default_selector=(f'backend=~"{SIMULATOR_BACKENDS}"',),
            example_labels=(("backend", "aer_simulator"), ("operation", "sampler"))),
    SLIKind("sample_latency_hardware", "Hardware jobs finishing within 1 s.", "latency",
            "qobs_job_duration_seconds", threshold_key="sample_latency_hardware",
            default_selector=(f'backend!~"{SIMULATOR_BACKENDS}"',),
            example_labels=(("backend", "ibm_torino"), ("operation", "sampler"))),
    SLIKind("transpile_latency", "Transpilations finishing within 30 s.", "latency",
            "qobs_transpile_duration_seconds", threshold_key="transpile",
            example_labels=(("backend", "ibm_torino"),)),
    SLIKind("queue_time", "Jobs waiting at most 60 s in the provider queue (interactive).", "latency",
            "qobs_queue_duration_seconds", threshold_key="queue_interactive",
            example_labels=(("backend", "ibm_torino"),)),
    SLIKind("queue_time_batch", "Jobs waiting at most 1 h in the provider queue (batch).", "latency",
            "qobs_queue_duration_seconds", threshold_key="queue_batch",
            example_labels=(("backend", "ibm_torino"),)),
)}


# Label values the generated tests give series when neither the SLI nor the SLO names one.
EXAMPLE_FILL: dict[str, str] = {"backend": "ibm_torino", "provider": "ibm", "operation": "sampler",
                                "model": "qgan", "source": "provider", "reason": "rate_limit"}


# --- model -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BurnTier:
    """One multiwindow burn-rate alert: fire when both windows burn at >= ``factor`` x the budget rate."""

    name: str
    severity: str
    long_s: int
    short_s: int
    factor: Fraction
    for_s: int = 0
    budget_fraction: Fraction | None = None  # share of the window's budget burnt in long_s at factor


# Workbook tiers: (name, severity, long, short, share of the budget consumed in the long window).
DEFAULT_TIERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("page_1h", "page", "1h", "5m", "0.02"),
    ("page_6h", "page", "6h", "30m", "0.05"),
    ("ticket_1d", "ticket", "1d", "2h", "0.1"),
    ("ticket_3d", "ticket", "3d", "6h", "0.1"),
)


@dataclass(frozen=True)
class SLO:
    name: str
    sli: SLIKind
    objective: Decimal
    window_s: int
    tiers: tuple[BurnTier, ...]
    tier: str | None = None
    description: str = ""
    group_by: tuple[str, ...] = ("backend",)
    selector: tuple[str, ...] = ()
    min_events: int = 10
    absent_for_s: int | None = 3600
    absent_severity: str = "ticket"
    threshold: float | None = None  # latency SLIs: the bucket bound (seconds)
    # ratio SLIs imported from OpenSLO: explicit selectors
    bad_selector: str | None = None
    good_selector: str | None = None
    total_selector: str | None = None
    example_labels: tuple[tuple[str, str], ...] = ()

    @property
    def budget(self) -> Fraction:
        return 1 - Fraction(self.objective)


@dataclass(frozen=True)
class HealthAlerts:
    """Alerts that are not error-budget burns: budgets, spend, fidelity, calibration, training, queue."""

    budget_thresholds: tuple[Decimal, ...] = (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"))
    budgets: bool = True
    spend_rate: bool = True
    spend_window_s: int = 86400
    spend_offset_s: int = 7 * 86400
    spend_factor: Decimal = Decimal(2)
    spend_min_usd: Decimal = Decimal(1)
    fidelity_drift: bool = True
    fidelity_drop: Decimal = Decimal("0.1")
    fidelity_for_s: int = 900
    calibration: bool = True
    calibration_max_age_s: int = 86400
    calibration_for_s: int = 300
    barren_plateau: bool = True
    snr_below: Decimal = Decimal(1)
    snr_for_s: int = 1800
    queue_p95: bool = True
    queue_quantile: Decimal = Decimal("0.95")
    queue_threshold_s: float = 3600.0
    queue_window_s: int = 3600
    queue_min_events: int = 5
    queue_for_s: int = 600
    severity: str = "ticket"


@dataclass(frozen=True)
class Spec:
    slos: tuple[SLO, ...]
    health: HealthAlerts = field(default_factory=HealthAlerts)
    runbook_url: str = DEFAULT_RUNBOOK
    source: str = "<memory>"


# --- loading ---------------------------------------------------------------------------------------
def load(path: str | Path | None = None) -> Spec:
    """Load and validate an SLO file (the bundled profiles when ``path`` is None)."""
    import yaml

    p = Path(path) if path is not None else BUNDLED
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the SLO file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: the SLO file is not UTF-8 text") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if not docs:
        raise ConfigError(f"{p}: empty SLO file")
    if all(isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("openslo/") for d in docs):
        data = from_openslo(docs)
    elif len(docs) == 1:
        data = docs[0]
    else:
        raise ConfigError(f"{p}: several YAML documents; only OpenSLO files may have more than one")
    return parse(data, source=str(p))


def parse(data: Any, source: str = "<memory>") -> Spec:
    """Validate a parsed SLO document (a mapping) into a ``Spec``."""
    if not isinstance(data, dict):
        raise ConfigError("(top level): expected a mapping with an 'slos' list")
    _known(data, "(top level)", {"apiVersion", "runbook_url", "slos", "alerts", "defaults"})
    api = data.get("apiVersion", API_VERSION)
    if api != API_VERSION:
        raise ConfigError(f"apiVersion: {api!r} is not supported; use {API_VERSION} (or an openslo/v1 SLO)")
    runbook = data.get("runbook_url", DEFAULT_RUNBOOK)
    if not isinstance(runbook, str) or not runbook.startswith(("http://", "https://")):
        raise ConfigError(f"runbook_url: {runbook!r} must be an http(s) URL pattern such as {DEFAULT_RUNBOOK}")
    try:
        runbook.format(alert="a", slo="s", sli="i")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"runbook_url: bad pattern ({exc}); placeholders are {{alert}}, {{slo}}, {{sli}}") from None
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("defaults: expected a mapping of SLO fields")
    raw = data.get("slos")
    if raw is None:
        raise ConfigError("slos: missing (a list of SLOs)")
    if not isinstance(raw, list):
        raise ConfigError("slos: expected a list of SLOs")
    slos = tuple(_slo({**defaults, **item} if isinstance(item, dict) else item, f"slos[{i}]")
                 for i, item in enumerate(raw))
    seen: set[str] = set()
    for i, s in enumerate(slos):
        if s.name in seen:
            raise ConfigError(f"slos[{i}].name: duplicate SLO name {s.name!r}")
        seen.add(s.name)
    return Spec(slos, _health(data.get("alerts", {}), "alerts"), runbook, source)


def _known(d: dict, where: str, allowed: set[str]) -> None:
    for k in d:
        if k not in allowed:
            at = k if where == "(top level)" else f"{where}.{k}"
            raise ConfigError(f"{at}: unknown field (known: {', '.join(sorted(allowed))})")


def _decimal(v: Any, where: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ConfigError(f"{where}: expected a number, got {v!r}")
    try:
        # str() of a YAML float is its shortest repr: 0.999 stays 0.999 (never 0.9990000000000001).
        d = Decimal(str(v).strip().rstrip("%")) / (100 if str(v).strip().endswith("%") else 1)
    except ArithmeticError:
        raise ConfigError(f"{where}: expected a number, got {v!r}") from None
    if not d.is_finite():
        raise ConfigError(f"{where}: expected a finite number, got {v!r}")
    return d


def _int(v: Any, where: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where}: expected an integer >= {lo}, got {v!r}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: expected true or false, got {v!r}")
    return v


def _matchers(raw: Any, where: str, labels: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError(f'{where}: expected a list of label matchers such as backend=~"ibm_.*"')
    out = []
    for j, m in enumerate(raw):
        mm = _MATCHER.match(m) if isinstance(m, str) else None
        if mm is None:
            raise ConfigError(f'{where}[{j}]: bad label matcher {m!r}; expected e.g. backend=~"ibm_.*"')
        if mm.group(1) not in labels:
            raise ConfigError(f"{where}[{j}]: label {mm.group(1)!r} is not on the SLI's series "
                              f"(labels: {', '.join(labels)})")
        if "~" in mm.group(2):
            try:
                re.compile(mm.group(3).encode().decode("unicode_escape"))
            except re.error as exc:
                raise ConfigError(f"{where}[{j}]: bad regular expression in {m!r} ({exc})") from None
        out.append(f'{mm.group(1)}{mm.group(2)}"{mm.group(3)}"')
    return tuple(out)


def _slo(d: Any, where: str) -> SLO:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _known(d, where, {"name", "description", "sli", "objective", "window", "tier", "group_by", "selector",
                      "min_events", "burn_rates", "default_burn_rates", "absent", "threshold_seconds",
                      "example_labels", "ratio"})
    name = d.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: {'missing' if name is None else repr(name)}; "
                          "expected lower-case letters, digits and dashes")
    tier = d.get("tier")
    if tier is not None and tier not in TIER_OBJECTIVES:
        raise ConfigError(f"{where}.tier: unknown tier {tier!r} (known: {', '.join(TIER_OBJECTIVES)})")
    sli_name = d.get("sli")
    if sli_name is None:
        raise ConfigError(f"{where}.sli: missing (one of {', '.join([*SLIS, 'ratio'])})")
    if sli_name == "ratio":
        sli, ratio = _ratio(d.get("ratio"), f"{where}.ratio")
    elif sli_name in SLIS:
        sli, ratio = SLIS[sli_name], {}
        if d.get("ratio") is not None:
            raise ConfigError(f"{where}.ratio: only for sli: ratio")
    else:
        raise ConfigError(f"{where}.sli: unknown SLI {sli_name!r} (known: {', '.join([*SLIS, 'ratio'])})")
    if "objective" not in d or d["objective"] is None:
        hint = f"; the {tier} tier's default is {TIER_OBJECTIVES[tier]}" if tier else ""
        raise ConfigError(f"{where}.objective: missing (a number in (0, 1) such as 0.99{hint})")
    objective = _decimal(d["objective"], f"{where}.objective")
    if not 0 < objective < 1:
        raise ConfigError(f"{where}.objective: {d['objective']!r} is outside (0, 1); write 0.99 for 99%")
    if "window" not in d:
        raise ConfigError(f"{where}.window: missing (30d, 28d, 7d, or a campaign window such as 3d or 10m)")
    window_s = parse_duration(d["window"], f"{where}.window")
    series_labels = _series_labels(sli, ratio)
    group_by = d.get("group_by", ["backend"] if "backend" in series_labels else [])
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise ConfigError(f"{where}.group_by: expected a list of label names")
    for g in group_by:
        if g not in series_labels:
            raise ConfigError(f"{where}.group_by: label {g!r} is not on the SLI's series "
                              f"(labels: {', '.join(series_labels)})")
    selector = _matchers(d.get("selector", list(sli.default_selector)), f"{where}.selector", series_labels)
    threshold = None
    if sli.kind == "latency":
        metric_name, bound = contract.SLO_THRESHOLDS[sli.threshold_key]  # type: ignore[index]
        threshold = bound
        if "threshold_seconds" in d:
            threshold = float(_decimal(d["threshold_seconds"], f"{where}.threshold_seconds"))
            if threshold not in (contract.metric(metric_name).buckets or ()):
                raise ConfigError(f"{where}.threshold_seconds: {threshold:g} is not a bucket bound of {metric_name} "
                                  f"({', '.join(f'{b:g}' for b in contract.metric(metric_name).buckets or ())})")
    elif "threshold_seconds" in d:
        raise ConfigError(f"{where}.threshold_seconds: only for latency SLIs")
    budget = 1 - Fraction(objective)
    tiers = _tiers(d, where, window_s, budget)
    absent = d.get("absent", {})
    absent_for: int | None = 3600
    absent_sev = "ticket"
    if absent is False:
        absent_for = None
    elif isinstance(absent, dict):
        _known(absent, f"{where}.absent", {"for", "severity"})
        if "for" in absent:
            absent_for = parse_duration(absent["for"], f"{where}.absent.for")
        absent_sev = _severity(absent.get("severity", "ticket"), f"{where}.absent.severity")
    else:
        raise ConfigError(f"{where}.absent: expected false or a mapping with for/severity")
    examples = d.get("example_labels", dict(sli.example_labels))
    if not isinstance(examples, dict) or not all(isinstance(v, str) for v in examples.values()):
        raise ConfigError(f"{where}.example_labels: expected a mapping of label to value")
    ex = tuple((k, v) for k, v in examples.items() if k in series_labels)
    _check_examples(selector, {**EXAMPLE_FILL, **dict(ex)}, f"{where}.example_labels")
    desc = d.get("description", sli.doc)
    if not isinstance(desc, str):
        raise ConfigError(f"{where}.description: expected text")
    return SLO(name=name, sli=sli, objective=objective, window_s=window_s, tiers=tiers, tier=tier,
               description=desc, group_by=tuple(group_by), selector=selector,
               min_events=_int(d.get("min_events", 10), f"{where}.min_events"),
               absent_for_s=absent_for, absent_severity=absent_sev, threshold=threshold,
               bad_selector=ratio.get("bad"), good_selector=ratio.get("good"), total_selector=ratio.get("total"),
               example_labels=ex)


def _series_labels(sli: SLIKind, ratio: dict[str, str]) -> tuple[str, ...]:
    """Labels usable in group_by/selector: those on every series the SLI reads."""
    names = [sli.total_metric, *([sli.bad_metric] if sli.bad_metric else [])]
    names += [_SELECTOR.match(s).group(1) for s in ratio.values()]  # type: ignore[union-attr]
    sets = [set(contract.metric(n).labels) for n in names]
    common = set.intersection(*sets)
    return tuple(lbl for lbl in contract.metric(names[0]).labels if lbl in common)


def _check_examples(selector: tuple[str, ...], examples: dict[str, str], where: str) -> None:
    for m in selector:
        mm = _MATCHER.match(m)
        assert mm is not None
        label, op, value = mm.groups()
        got = examples.get(label, "")
        value = value.encode().decode("unicode_escape")
        ok = {"=": got == value, "!=": got != value, "=~": re.fullmatch(value, got) is not None,
              "!~": re.fullmatch(value, got) is None}[op]
        if not ok:
            raise ConfigError(f"{where}: {label}={got!r} does not satisfy the selector {m}; give example label "
                              "values for the generated tests")


def _severity(v: Any, where: str) -> str:
    if v not in SEVERITIES:
        raise ConfigError(f"{where}: {v!r}; expected page or ticket")
    return v


def _tiers(d: dict, where: str, window_s: int, budget: Fraction) -> tuple[BurnTier, ...]:
    use_defaults = _bool(d.get("default_burn_rates", True), f"{where}.default_burn_rates")
    raw = d.get("burn_rates", {}) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.burn_rates: expected a mapping of tier name to false or settings")
    specs: dict[str, dict[str, Any]] = {}
    if use_defaults:
        for name, sev, long_w, short_w, share in DEFAULT_TIERS:
            specs[name] = {"severity": sev, "long_window": long_w, "short_window": short_w, "budget_fraction": share}
    for name, v in raw.items():
        w = f"{where}.burn_rates.{name}"
        if not isinstance(name, str) or not _LABEL.match(name):
            raise ConfigError(f"{w}: tier names are letters, digits and underscores")
        if v is False:
            if name not in specs:
                raise ConfigError(f"{w}: no such tier to switch off (tiers: {', '.join(specs) or 'none'})")
            del specs[name]
            continue
        if v is True:
            if name not in specs:
                raise ConfigError(f"{w}: no such default tier")
            continue
        if not isinstance(v, dict):
            raise ConfigError(f"{w}: expected false or a mapping")
        _known(v, w, {"severity", "long_window", "short_window", "budget_fraction", "factor", "for"})
        base = dict(specs.get(name, {}))
        if "factor" in v:
            base.pop("budget_fraction", None)
        base.update(v)
        specs[name] = base
    tiers = []
    for name, s in specs.items():
        w = f"{where}.burn_rates.{name}"
        for req in ("severity", "long_window", "short_window"):
            if req not in s:
                raise ConfigError(f"{w}.{req}: missing")
        sev = _severity(s["severity"], f"{w}.severity")
        long_s = parse_duration(s["long_window"], f"{w}.long_window")
        short_s = parse_duration(s["short_window"], f"{w}.short_window")
        if short_s >= long_s:
            raise ConfigError(f"{w}.short_window: {s['short_window']} must be shorter than the long window "
                              f"{s['long_window']}")
        if long_s > window_s:
            raise ConfigError(f"{w}.long_window: {s['long_window']} is longer than the SLO window "
                              f"{fmt_duration(window_s)}; switch the tier off ({name}: false) or give short windows")
        share = None
        if "factor" in s:
            factor = Fraction(_decimal(s["factor"], f"{w}.factor"))
        elif "budget_fraction" in s:
            share = Fraction(_decimal(s["budget_fraction"], f"{w}.budget_fraction"))
            if not 0 < share <= 1:
                raise ConfigError(f"{w}.budget_fraction: must be in (0, 1]")
            # Burn the same share of the budget in the long window, whatever the SLO window.
            factor = share * window_s / long_s
        else:
            raise ConfigError(f"{w}.factor: missing (or give budget_fraction)")
        if factor <= 0:
            raise ConfigError(f"{w}.factor: must be > 0")
        if factor * budget > 1:
            raise ConfigError(f"{w}.factor: {fmt_number(factor)} x budget {fmt_number(budget)} exceeds an error "
                              "ratio of 1, so the alert could never fire; lower it or raise the objective")
        for_s = parse_duration(s["for"], f"{w}.for") if s.get("for") not in (None, 0, "0s") else 0
        tiers.append(BurnTier(name, sev, long_s, short_s, factor, for_s, share))
    return tuple(tiers)


def _ratio(raw: Any, where: str) -> tuple[SLIKind, dict[str, str]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: missing (for sli: ratio give good or bad, and total, as contract selectors)")
    _known(raw, where, {"good", "bad", "total"})
    if "total" not in raw or ("good" in raw) == ("bad" in raw):
        raise ConfigError(f"{where}: give total and exactly one of good or bad")
    out: dict[str, str] = {}
    for k, v in raw.items():
        m = _SELECTOR.match(v) if isinstance(v, str) else None
        if m is None:
            raise ConfigError(f"{where}.{k}: {v!r} is not a plain selector such as qobs_jobs_total{{status=\"ok\"}}")
        name = m.group(1)
        if name not in contract.METRICS_BY_NAME or contract.metric(name).kind != "counter":
            raise ConfigError(f"{where}.{k}: {name!r} is not a counter of the SLI contract")
        inner = [x.strip() for x in (m.group(2) or "").split(",") if x.strip()]
        matchers = _matchers(inner, f"{where}.{k}", contract.metric(name).labels)
        out[k] = name + ("{" + ",".join(matchers) + "}" if matchers else "")
    total = _SELECTOR.match(out["total"]).group(1)  # type: ignore[union-attr]
    return SLIKind("ratio", "Custom ratio of contract counters.", "ratio", total), out


def _health(raw: Any, where: str) -> HealthAlerts:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _known(raw, where, {"budgets", "spend_rate", "fidelity_drift", "calibration", "barren_plateau", "queue_p95",
                        "severity"})
    kw: dict[str, Any] = {}
    if "severity" in raw:
        kw["severity"] = _severity(raw["severity"], f"{where}.severity")

    def section(key: str, fields: dict[str, tuple[str, str]]) -> None:
        v = raw.get(key, {})
        w = f"{where}.{key}"
        if v is False:
            kw[key] = False
            return
        if v is True or v is None:
            return
        if not isinstance(v, dict):
            raise ConfigError(f"{w}: expected false or a mapping")
        _known(v, w, set(fields))
        for k, (attr, typ) in fields.items():
            if k not in v:
                continue
            fw = f"{w}.{k}"
            if typ == "duration":
                kw[attr] = parse_duration(v[k], fw)
            elif typ == "int":
                kw[attr] = _int(v[k], fw, 1)
            elif typ == "seconds":
                kw[attr] = float(_decimal(v[k], fw))
            elif typ == "thresholds":
                if not isinstance(v[k], list) or not v[k]:
                    raise ConfigError(f"{fw}: expected a list of fractions such as [0.25, 0.5, 0.75]")
                ts = tuple(_decimal(x, f"{fw}[{i}]") for i, x in enumerate(v[k]))
                if any(not 0 < t <= 1 for t in ts) or list(ts) != sorted(set(ts)):
                    raise ConfigError(f"{fw}: thresholds must be increasing fractions in (0, 1]")
                kw[attr] = ts
            else:
                num = _decimal(v[k], fw)
                if num <= 0:
                    raise ConfigError(f"{fw}: must be > 0")
                kw[attr] = num

    section("budgets", {"thresholds": ("budget_thresholds", "thresholds")})
    section("spend_rate", {"window": ("spend_window_s", "duration"), "offset": ("spend_offset_s", "duration"),
                           "factor": ("spend_factor", "num"), "min_usd": ("spend_min_usd", "num")})
    section("fidelity_drift", {"drop": ("fidelity_drop", "num"), "for": ("fidelity_for_s", "duration")})
    section("calibration", {"max_age": ("calibration_max_age_s", "duration"),
                            "for": ("calibration_for_s", "duration")})
    section("barren_plateau", {"snr_below": ("snr_below", "num"), "for": ("snr_for_s", "duration")})
    section("queue_p95", {"quantile": ("queue_quantile", "num"), "threshold_seconds": ("queue_threshold_s", "seconds"),
                          "window": ("queue_window_s", "duration"), "min_events": ("queue_min_events", "int"),
                          "for": ("queue_for_s", "duration")})
    h = HealthAlerts(**kw)
    if not 0 < h.fidelity_drop < 1:
        raise ConfigError(f"{where}.fidelity_drift.drop: must be in (0, 1), e.g. 0.1 for a 10% drop")
    if not 0 < h.queue_quantile < 1:
        raise ConfigError(f"{where}.queue_p95.quantile: must be in (0, 1)")
    buckets = contract.metric("qobs_queue_duration_seconds").buckets or ()
    if h.queue_threshold_s not in buckets[:-1]:
        raise ConfigError(f"{where}.queue_p95.threshold_seconds: {h.queue_threshold_s:g} is not a bucket bound of "
                          f"qobs_queue_duration_seconds below the last ({', '.join(f'{b:g}' for b in buckets[:-1])})")
    return h


# --- OpenSLO ---------------------------------------------------------------------------------------
def from_openslo(docs: list[dict]) -> dict[str, Any]:
    """Turn OpenSLO v1 ``kind: SLO`` documents with a ``ratioMetric`` indicator into a qobs/v1 mapping."""
    slos = []
    for i, doc in enumerate(docs):
        where = f"openslo[{i}]"
        if doc.get("apiVersion") != "openslo/v1":
            raise ConfigError(f"{where}.apiVersion: {doc.get('apiVersion')!r}; only openslo/v1 is supported")
        if doc.get("kind") != "SLO":
            raise ConfigError(f"{where}.kind: {doc.get('kind')!r}; only kind SLO is imported")
        spec = doc.get("spec") or {}
        name = (doc.get("metadata") or {}).get("name")
        ind = (spec.get("indicator") or {}).get("spec") or {}
        rm = ind.get("ratioMetric")
        if not isinstance(rm, dict):
            raise ConfigError(f"{where}.spec.indicator.spec.ratioMetric: missing (only ratioMetric SLIs import)")
        ratio: dict[str, str] = {}
        for k in ("good", "bad", "total"):
            if k in rm:
                src = (rm[k] or {}).get("metricSource") or {}
                if str(src.get("type", "")).lower() != "prometheus":
                    raise ConfigError(f"{where}.spec.indicator.spec.ratioMetric.{k}.metricSource.type: "
                                      f"{src.get('type')!r}; only Prometheus sources import")
                ratio[k] = str((src.get("spec") or {}).get("query", "")).strip()
        objectives = spec.get("objectives") or [{}]
        target = objectives[0].get("target")
        windows = spec.get("timeWindow") or [{}]
        slo: dict[str, Any] = {"name": name, "sli": "ratio", "ratio": ratio, "window": windows[0].get("duration")}
        if target is not None:
            slo["objective"] = target
        if spec.get("description"):
            slo["description"] = spec["description"]
        slos.append(slo)
    return {"apiVersion": API_VERSION, "slos": slos}
