"""PromQL built from the SLI contract: every series name comes from ``contract.metric``.

``series()`` checks each label matcher against the metric's declared labels (and, for a label with
a closed value set, the value against that set), so a typo fails at build time, not in Grafana.
"""

from __future__ import annotations

import re

from prometheus_client.utils import floatToGoString

from qobs import contract

# Template variables every dashboard declares (substituted by Grafana, or by the tests).
BACKEND = 'backend=~"$backend"'
MODEL = 'model=~"$model"'
RATE = "$__rate_interval"
RANGE = "$__range"
OBJECTIVE = "$objective"

_CLOSED_VALUES: dict[str, tuple[str, ...]] = {
    "status": contract.STATUS_VALUES,
    "purpose": contract.PURPOSE_VALUES,
    "source": contract.COST_SOURCE_VALUES,
    "result": contract.FIDELITY_RESULT_VALUES,
    "component": contract.LOSS_COMPONENT_VALUES,
    "metric": contract.DIVERGENCE_VALUES,
    "reason": contract.SUBMISSION_REASON_VALUES,
    "operation": contract.OPERATION_VALUES,
}
_MATCHER = re.compile(r'^([a-z_]+)(=~|!~|!=|=)"(.*)"$')
_SUFFIXES = ("", "_bucket", "_sum", "_count")


def series(name: str, *matchers: str, suffix: str = "") -> str:
    """A selector such as ``qobs_jobs_total{status="ok", backend=~"$backend"}``, checked against the contract."""
    m = contract.metric(name)
    if suffix not in _SUFFIXES or (suffix and m.kind != "histogram"):
        raise ValueError(f"{name}: suffix {suffix!r} does not apply to a {m.kind}")
    allowed = set(m.labels) | ({"le"} if suffix == "_bucket" else set())
    for text in matchers:
        parsed = _MATCHER.match(text)
        if parsed is None:
            raise ValueError(f"{name}: malformed matcher {text!r}")
        label, op, value = parsed.groups()
        if label not in allowed:
            raise ValueError(f"{name}: no label {label!r} (declared: {', '.join(m.labels)})")
        if label in m.closed and op in ("=", "!=") and value not in _CLOSED_VALUES[label]:
            raise ValueError(f"{name}: {label}={value!r} is not one of {_CLOSED_VALUES[label]}")
    return name + suffix + ("{" + ", ".join(matchers) + "}" if matchers else "")


def le(bound: float) -> str:
    """Matcher for the exact bucket ``bound``.

    prometheus_client writes ``le="1.0"`` (and Prometheus 3 normalises to that spelling); an OTLP
    path may write ``le="1"``. Where the two differ the matcher accepts both, still exactly one bucket.
    """
    go = floatToGoString(bound)
    short = f"{bound:g}"
    return f'le="{go}"' if go == short else f'le=~"{short}|{go.replace(".", "[.]")}"'


def by(labels: tuple[str, ...], inner: str, agg: str = "sum") -> str:
    return f"{agg} by ({', '.join(labels)}) ({inner})" if labels else f"{agg}({inner})"


def rate(sel: str, window: str = RATE) -> str:
    return f"rate({sel}[{window}])"


def increase(sel: str, window: str = RATE) -> str:
    return f"increase({sel}[{window}])"


def bad_ratio(bad: str, total: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    """Share of bad events; a group with traffic and no bad series yet reads 0, not 'no data'."""
    t = by(group, rate(total, window))
    return f"({by(group, rate(bad, window))} or 0 * {t}) / {t}"


def good_ratio(good: str, total: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    t = by(group, rate(total, window))
    return f"({by(group, rate(good, window))} or 0 * {t}) / {t}"


def quantile(q: float, name: str, *matchers: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    """``histogram_quantile`` over the classic ``_bucket`` series (interpolated within a bucket)."""
    buckets = by(("le", *group), rate(series(name, *matchers, suffix="_bucket"), window))
    return f"histogram_quantile({q:g}, {buckets})"


def fraction_under(name: str, bound: float, *matchers: str, group: tuple[str, ...] = (), window: str = RATE) -> str:
    """Exact share of observations <= ``bound`` (a bucket bound by contract, so no interpolation)."""
    m = contract.metric(name)
    if m.buckets is None or bound not in m.buckets:
        raise ValueError(f"{name}: {bound:g} is not a bucket bound")
    good = series(name, le(bound), *matchers, suffix="_bucket")
    total = series(name, *matchers, suffix="_count")
    return f"{by(group, rate(good, window))} / {by(group, rate(total, window))}"


def heatmap(name: str, *matchers: str, window: str = RATE) -> str:
    """Per-bucket increases for a Grafana heatmap (format ``heatmap`` turns cumulative buckets into cells)."""
    return by(("le",), increase(series(name, *matchers, suffix="_bucket"), window))


def threshold(key: str) -> float:
    """An SLO threshold from the contract (``sample_latency_simulator`` -> 0.2)."""
    return contract.SLO_THRESHOLDS[key][1]
