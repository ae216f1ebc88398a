"""Prometheus instruments, built from the contract into prometheus_client's default ``REGISTRY``.

Anything that already exposes or pushes the default registry (an exporter, a Pushgateway push)
picks qobs's series up. Labelled children are cached: the hot path is one dict lookup and one
``inc``/``observe``. A cardinality guard folds values of open labels (backend, model, ...) past
``label_limit`` into ``other`` and counts each fold in ``qobs_label_overflow_total``. When OTLP
metrics are configured, each update is written to an OpenTelemetry instrument as well.
"""

from __future__ import annotations

import platform
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from qobs import _forksafe, contract
from qobs.contract import OVERFLOW_VALUE, Metric

_MAX_LABEL_LEN = 128
_MAX_CACHED = 10_000


class Child:
    """A labelled series: ``inc``, ``observe`` or ``set`` by kind, mirrored to OTel when enabled.

    ``inc`` and ``observe`` go straight to the client's value objects (one lock each; a histogram
    finds its bucket by bisection instead of the client's linear scan over every bound). Exposition
    and multiprocess mode are the client's own, unchanged. A client without those internals gets
    its public methods instead.
    """

    __slots__ = ("inc", "labels", "observe", "observe_many", "set")

    def __init__(self, prom: Any, kind: str, otel: Any | None, labels: dict[str, str]) -> None:
        self.labels = labels
        noop: Callable[..., None] = _reject(kind)
        self.inc = self.observe = self.observe_many = self.set = noop
        if kind == "counter":
            inc = _fast_inc(prom)
            if otel is not None:
                def inc_both(amount: float = 1.0, _inc: Callable[[float], None] = inc) -> None:
                    _inc(amount)
                    otel.add(amount, labels)
                inc = inc_both
            self.inc = inc
        elif kind == "histogram":
            observe = _fast_observe(prom)
            many = _fast_observe_many(prom, observe)
            if otel is not None:
                def observe_both(value: float, _observe: Callable[[float], None] = observe) -> None:
                    _observe(value)
                    otel.record(value, labels)
                observe = observe_both

                def many_both(values: list[float], _many: Callable[[list[float]], None] = many) -> None:
                    _many(values)
                    for v in values:
                        otel.record(v, labels)
                many = many_both
            self.observe = observe
            self.observe_many = many
        elif otel is None:
            self.set = prom.set
        else:
            def set_(value: float) -> None:
                prom.set(value)
                otel.set(value, labels)
            self.set = set_


def _fast_inc(prom: Any) -> Callable[..., None]:
    value = getattr(prom, "_value", None)
    if not callable(getattr(value, "inc", None)):
        return prom.inc
    add = value.inc

    def inc(amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        add(amount)
    return inc


def _fast_observe(prom: Any) -> Callable[[float], None]:
    bounds, buckets, total = (getattr(prom, a, None) for a in ("_upper_bounds", "_buckets", "_sum"))
    if not (isinstance(bounds, list) and isinstance(buckets, list) and len(bounds) == len(buckets)
            and bounds and bounds[-1] == float("inf") and callable(getattr(total, "inc", None))):
        return prom.observe
    incs = [b.inc for b in buckets]
    add_sum = total.inc

    def observe(value: float) -> None:
        add_sum(value)
        if value == value:  # NaN goes in no bucket, as in the client
            incs[bisect_left(bounds, value)](1)  # the first bound >= value, as the client's scan finds
    return observe


def _fast_observe_many(prom: Any, observe: Callable[[float], None]) -> Callable[[list[float]], None]:
    """``observe`` of each value, as one update per touched bucket and one of the sum (a batch of jobs
    takes each lock once, not once per value). Falls back to ``observe`` per value."""
    bounds, buckets, total = (getattr(prom, a, None) for a in ("_upper_bounds", "_buckets", "_sum"))
    if observe is getattr(prom, "observe", None) or not isinstance(buckets, list):
        def each(values: list[float]) -> None:
            for v in values:
                observe(v)
        return each
    incs = [b.inc for b in buckets]
    add_sum = total.inc

    def many(values: list[float]) -> None:
        if len(values) == 1:
            observe(values[0])
            return
        add_sum(sum(values))
        counts: dict[int, int] = {}
        for v in values:
            if v == v:  # NaN goes in no bucket
                i = bisect_left(bounds, v)
                counts[i] = counts.get(i, 0) + 1
        for i, n in counts.items():
            incs[i](n)
    return many


def _reject(kind: str) -> Callable[..., None]:
    def wrong(*_a: object, **_k: object) -> None:
        raise TypeError(f"operation not supported on a {kind}")
    return wrong


class Family:
    """One contract metric: a prometheus_client collector plus the cardinality guard."""

    def __init__(self, m: Metric, registry: CollectorRegistry, limit: int, otel: Any | None) -> None:
        self.metric = m
        self.limit = limit
        self._otel = otel
        cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[m.kind]
        kw: dict[str, Any] = {"buckets": m.buckets} if m.kind == "histogram" else {}
        self._prom = cls(m.client_name, m.help, m.labels, registry=registry, **kw)
        self._children: dict[tuple, Child] = {}
        self._seen: dict[str, set[str]] = {lbl: set() for lbl in m.labels if lbl not in m.closed}
        self._lock = threading.Lock()

    def child(self, *values: object) -> Child:
        """The cached series for these label values (in contract order)."""
        c = self._children.get(values)
        if c is None:
            c = self._make(values)
        return c

    def labels(self, **kw: object) -> Child:
        return self.child(*(kw[lbl] for lbl in self.metric.labels))

    def _make(self, raw: tuple) -> Child:
        if len(raw) != len(self.metric.labels):
            raise ValueError(f"{self.metric.name} takes labels {self.metric.labels}, got {len(raw)} values")
        with self._lock:
            c = self._children.get(raw)
            if c is not None:
                return c
            values = []
            folded = False
            for name, v in zip(self.metric.labels, raw, strict=False):
                s = "" if v is None else str(v)[:_MAX_LABEL_LEN]
                seen = self._seen.get(name)
                if seen is not None and s not in seen:
                    if len(seen) >= self.limit:
                        count_overflow(self.metric.name, name)
                        s, folded = OVERFLOW_VALUE, True
                    else:
                        seen.add(s)
                values.append(s)
            prom = self._prom.labels(*values) if values else self._prom
            c = Child(prom, self.metric.kind, self._otel, dict(zip(self.metric.labels, values, strict=False)))
            if not folded and len(self._children) < _MAX_CACHED:
                self._children[raw] = c
            return c


class Instruments:
    """All contract families, created once per process."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, limit: int = contract.DEFAULT_LABEL_LIMIT,
                 meter: Any | None = None) -> None:
        self.registry = registry
        self.families: dict[str, Family] = {}
        for m in contract.METRICS:
            otel = _otel_instrument(meter, m) if meter is not None else None
            self.families[m.name] = Family(m, registry, limit, otel)

    def __getitem__(self, name: str) -> Family:
        return self.families[name]


def _otel_instrument(meter: Any, m: Metric) -> Any:
    if m.kind == "counter":
        return meter.create_counter(m.name, unit=m.unit, description=m.help)
    if m.kind == "histogram":
        return meter.create_histogram(m.name, unit=m.unit, description=m.help,
                                      explicit_bucket_boundaries_advisory=list(m.buckets or ()))
    return meter.create_gauge(m.name, unit=m.unit, description=m.help)


_instruments: Instruments | None = None
_init_lock = threading.Lock()
_forksafe.module_locks(__name__, "_init_lock")


def _renew_series_locks() -> None:
    """In a forked child: fresh locks for every qobs series (a scrape reading one in the parent held its
    lock), the families' guards and the registry. The client's value objects keep their values."""
    ins = _instruments
    if ins is None:
        return
    _forksafe.renew_attr(ins.registry)
    for fam in ins.families.values():
        _forksafe.renew_attr(fam)
        prom = fam._prom
        _forksafe.renew_attr(prom)
        for series in (prom, *getattr(prom, "_metrics", {}).values()):
            for value in (getattr(series, "_value", None), getattr(series, "_sum", None),
                          *(getattr(series, "_buckets", None) or ())):
                if value is not None:
                    _forksafe.renew_attr(value)


_forksafe.on_fork(_renew_series_locks)


def instruments(limit: int | None = None, meter: Any | None = None) -> Instruments:
    """The process-wide instruments in the default registry (created on first use)."""
    global _instruments
    if _instruments is None:
        from qobs import telemetry

        telemetry.install_drain_collector()  # ahead of the instruments' own collectors
        with _init_lock:
            if _instruments is None:
                _instruments = Instruments(REGISTRY, limit or contract.DEFAULT_LABEL_LIMIT, meter)
                _set_build_info(_instruments)
    return _instruments


def family(name: str) -> Family:
    return instruments()[name]


def count_internal_error(component: str) -> None:
    family("qobs_internal_errors_total").child(component).inc()


def count_overflow(metric_name: str, label: str) -> None:
    # The overflow counter's own labels are metric and label names from the contract: bounded.
    (_instruments or instruments())["qobs_label_overflow_total"]._prom.labels(metric_name, label).inc()


def _set_build_info(ins: Instruments) -> None:
    from qobs import __version__
    from qobs._versions import sdk_version

    ins["qobs_build_info"].child(__version__, platform.python_version(), sdk_version("qiskit") or "none",
                                 sdk_version("pennylane") or "none").set(1)
