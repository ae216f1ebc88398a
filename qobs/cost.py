"""What quantum jobs cost: a validated price catalog, per-job pricing, estimates and cost per sample.

Pricing models (what real providers bill):

- ``per_task_shot``: a fee per task (one task per circuit) plus a rate per shot (Amazon Braket QPUs);
- ``duration``: a rate per minute of run time, billed per millisecond with a minimum per task
  (Braket's managed simulators, 3 s minimum);
- ``qpu_seconds``: provider-reported QPU seconds (IBM ``usage.qpu_charge_time_seconds`` in
  ``job.metrics()``) times a plan rate;
- ``free``: local simulators.

Failed, cancelled and refused jobs cost zero and say why. A backend with no catalog entry is
unpriced (``record.priced = False`` -> ``qobs_unpriced_jobs_total``), never silently zero. All
arithmetic is ``Decimal``; every figure carries its currency and source (catalog, provider, estimate).
The bundled prices are examples from public price pages: verify them, or point ``QOBS_PRICES`` at
your own file (entries there take precedence).
"""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from qobs import _forksafe
from qobs._context import CTX_METRICS
from qobs.errors import ConfigError

MODELS = ("free", "per_task_shot", "duration", "qpu_seconds")
CURRENCIES = ("USD",)  # the metric is qobs_cost_usd_total: other currencies would mix units
_DEC_FIELDS = ("per_task", "per_shot", "per_minute", "minimum_seconds", "per_second",
               "estimate_overhead_seconds", "estimate_seconds_per_shot")
_REQUIRED = {"per_task_shot": ("per_shot",), "duration": ("per_minute",), "qpu_seconds": ("per_second",),
             "free": ()}
_FIELDS = {"match", "provider", "model", "currency", "note", *_DEC_FIELDS}
BUNDLED = Path(__file__).with_name("data") / "prices.json"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Price:
    """One catalog entry: which backends it covers (glob on the name) and how they bill."""

    match: str
    model: str
    provider: str | None = None
    currency: str = "USD"
    per_task: Decimal = ZERO
    per_shot: Decimal = ZERO
    per_minute: Decimal = ZERO
    minimum_seconds: Decimal = ZERO
    per_second: Decimal = ZERO
    estimate_overhead_seconds: Decimal = ZERO
    estimate_seconds_per_shot: Decimal = ZERO
    note: str = ""
    origin: str = ""


@dataclass(frozen=True)
class Cost:
    """A priced (or unpriced: ``amount is None``) figure with its currency and source."""

    amount: Decimal | None
    currency: str
    source: str | None
    backend: str
    reason: str | None = None

    @property
    def priced(self) -> bool:
        return self.amount is not None

    def __str__(self) -> str:
        if self.amount is None:
            return f"unpriced ({self.backend})"
        return f"{self.amount} {self.currency} ({self.source})"


class Catalog:
    """Ordered price entries; the first whose pattern matches a backend wins."""

    def __init__(self, prices: list[Price]) -> None:
        self.prices = prices
        self._cache: dict[tuple[str, str | None], Price | None] = {}

    def lookup(self, backend: str, provider: str | None = None) -> Price | None:
        key = (backend, provider)
        if key in self._cache:
            return self._cache[key]
        name = backend.lower()
        found = None
        for p in self.prices:
            if not fnmatch.fnmatchcase(name, p.match.lower()):
                continue
            if p.provider and not (provider and fnmatch.fnmatchcase(provider.lower(), p.provider.lower())):
                continue
            found = p
            break
        if len(self._cache) < 10_000:
            self._cache[key] = found
        return found


# --- loading and validation ----------------------------------------------------------------------

def read_structured(path: str | Path, what: str) -> Any:
    """Parse a YAML or JSON file; any problem is one ConfigError line naming the file."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} file {p}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {p}: not UTF-8 text") from None
    if p.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{what} file {p}: not valid JSON ({exc})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{what} file {p}: not valid YAML{where} ({problem})") from None


def decimal_field(value: Any, where: str) -> Decimal:
    """A non-negative Decimal from a number or numeric string (floats go through ``str``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(f"{where}: expected a non-negative number, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: expected a non-negative number, got {value!r}")
    return d


def parse_catalog(data: Any, origin: str) -> list[Price]:
    """Validate a catalog document (``{"prices": [...]}`` or a bare list). Raises ConfigError."""
    if isinstance(data, Mapping):
        unknown = set(data) - {"version", "currency", "note", "prices"}
        if unknown:
            raise ConfigError(f"{origin}: unknown top-level field {sorted(unknown)[0]!r} "
                              "(expected version, currency, note, prices)")
        if data.get("version", 1) != 1:
            raise ConfigError(f"{origin}: version {data['version']!r} is not one this qobs reads (1)")
        default_currency = data.get("currency", "USD")
        entries = data.get("prices")
    else:
        default_currency, entries = "USD", data
    if not isinstance(entries, list):
        raise ConfigError(f"{origin}: prices: expected a list of price entries")
    out: list[Price] = []
    for i, e in enumerate(entries):
        where = f"{origin}: prices[{i}]"
        if not isinstance(e, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(e).__name__}")
        unknown = set(e) - _FIELDS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field (expected {', '.join(sorted(_FIELDS))})")
        match = e.get("match")
        if not isinstance(match, str) or not match.strip():
            raise ConfigError(f"{where}.match: expected a backend name or glob pattern")
        model = e.get("model")
        if model not in MODELS:
            raise ConfigError(f"{where}.model: expected one of {', '.join(MODELS)}, got {model!r}")
        for req in _REQUIRED[model]:
            if req not in e:
                raise ConfigError(f"{where}.{req}: required for model {model}")
        currency = e.get("currency", default_currency)
        if currency not in CURRENCIES:
            raise ConfigError(f"{where}.currency: only {', '.join(CURRENCIES)} is supported, got {currency!r}")
        provider = e.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ConfigError(f"{where}.provider: expected a string")
        decs = {f: decimal_field(e[f], f"{where}.{f}") for f in _DEC_FIELDS if f in e}
        out.append(Price(match=match.strip(), model=model, provider=provider, currency=currency,
                         note=str(e.get("note", "")), origin=origin, **decs))
    return out


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The bundled catalog, with the entries of ``path`` (``QOBS_PRICES``) in front. Raises ConfigError."""
    prices: list[Price] = []
    if path:
        prices += parse_catalog(read_structured(path, "price"), str(path))
    prices += parse_catalog(json.loads(BUNDLED.read_text(encoding="utf-8")), "bundled prices")
    return Catalog(prices)


_catalog: Catalog | None = None
_catalog_lock = threading.Lock()


def catalog() -> Catalog:
    """The process catalog (``QOBS_PRICES`` + bundled). A bad user file is reported once and ignored."""
    global _catalog
    c = _catalog
    if c is not None:
        return c
    with _catalog_lock:
        if _catalog is None:
            from qobs import features

            path = features.settings().prices
            try:
                _catalog = load_catalog(path)
            except ConfigError as exc:
                from qobs.errors import report_internal

                report_internal("prices", exc)
                _catalog = load_catalog(None)
        return _catalog


def reset() -> None:
    """Forget the loaded catalog and the cost ledger (settings changed; tests)."""
    global _catalog
    with _catalog_lock:
        _catalog = None
    _ledger.reset()


# --- pricing ------------------------------------------------------------------------------------

def _usage_seconds(job_metrics: Any) -> Decimal | None:
    """Provider-reported billable seconds from IBM-style ``job.metrics()``."""
    if not isinstance(job_metrics, Mapping):
        return None
    usage = job_metrics.get("usage")
    if not isinstance(usage, Mapping):
        return None
    for key in ("qpu_charge_time_seconds", "quantum_seconds", "seconds"):
        v = usage.get(key)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            try:
                return Decimal(str(v))
            except InvalidOperation:
                return None
    return None


def _billed_duration(price: Price, seconds: Decimal, tasks: int) -> Decimal:
    """Per-minute rate on run time rounded up to the millisecond, with a minimum per task."""
    per_task = seconds / tasks
    billed_ms = max(per_task, price.minimum_seconds) * 1000
    billed_ms = billed_ms.to_integral_value(rounding=ROUND_CEILING)
    return price.per_minute * billed_ms * tasks / Decimal(60_000)


def price_job(record: Any, cat: Catalog | None = None) -> Cost:
    """Price a finished ``JobRecord``."""
    cat = cat or catalog()
    price = cat.lookup(record.backend, record.provider)
    if record.submission_reason is not None:
        return Cost(ZERO, price.currency if price else "USD", "catalog", record.backend,
                    f"refused at submission ({record.submission_reason}): not billed")
    if record.status != "ok":
        return Cost(ZERO, price.currency if price else "USD", "catalog", record.backend,
                    f"job {'cancelled' if record.status == 'cancelled' else 'failed'}: not billed")
    if price is None:
        return Cost(None, "USD", None, record.backend, "no price in the catalog")
    tasks = max(record.circuits or 0, 1)
    if price.model == "free":
        return Cost(ZERO, price.currency, "catalog", record.backend)
    if price.model == "per_task_shot":
        shots = record.shots
        source = "catalog"
        if shots is None:
            if record.shots_requested is None:
                return Cost(price.per_task * tasks, price.currency, "estimate", record.backend,
                            "shots unknown: task fees only")
            shots, source = record.shots_requested * tasks, "estimate"
        return Cost(price.per_task * tasks + price.per_shot * shots, price.currency, source, record.backend)
    if price.model == "duration":
        if record.execution_s is not None:
            seconds, source = Decimal(str(record.execution_s)), "catalog"
        elif record.duration_s is not None:
            seconds, source = Decimal(str(record.duration_s)), "estimate"
        else:
            seconds, source = ZERO, "estimate"
        return Cost(_billed_duration(price, seconds, tasks), price.currency, source, record.backend)
    # qpu_seconds
    used = _usage_seconds(record.context.get(CTX_METRICS))
    if used is not None:
        return Cost(price.per_second * used, price.currency, "provider", record.backend)
    if record.execution_s is not None:
        return Cost(price.per_second * Decimal(str(record.execution_s)), price.currency, "estimate", record.backend,
                    "no provider usage: execution time used")
    shots = record.shots if record.shots is not None else (record.shots_requested or 0) * tasks
    return Cost(_estimate_seconds(price, shots) * price.per_second, price.currency, "estimate", record.backend,
                "no provider usage: estimated from shots")


def _estimate_seconds(price: Price, shots: int) -> Decimal:
    return price.estimate_overhead_seconds + price.estimate_seconds_per_shot * shots


def backend_name(backend: Any) -> str:
    """A backend/device name from a name or an SDK object (Qiskit BackendV1/V2, PennyLane device)."""
    if isinstance(backend, str):
        return backend
    name = getattr(backend, "name", None)
    if callable(name):
        name = name()
    if isinstance(name, str) and name:
        return name
    short = getattr(backend, "short_name", None)
    return short if isinstance(short, str) else type(backend).__name__


def _count_circuits(circuits: Any) -> int:
    if isinstance(circuits, int):
        return circuits
    if isinstance(circuits, (list, tuple)):
        return len(circuits)
    return 1


def estimate(circuits: Any, shots: int, backend: Any, provider: str | None = None) -> Cost:
    """Estimated cost of running ``circuits`` (a circuit, a list, or a count) with ``shots`` each.

    Source is ``estimate`` (``catalog`` for free backends); ``amount`` is None when the backend has
    no price.
    """
    name = backend_name(backend)
    provider = provider or getattr(backend, "provider_name", None)
    price = catalog().lookup(name, provider)
    if price is None:
        return Cost(None, "USD", None, name, "no price in the catalog")
    n = max(_count_circuits(circuits), 1)
    total = shots * n
    if price.model == "free":
        return Cost(ZERO, price.currency, "catalog", name)
    if price.model == "per_task_shot":
        amount = price.per_task * n + price.per_shot * total
    elif price.model == "duration":
        # Shot simulators finish small circuits well under the minimum: the minimum is the estimate.
        secs = _estimate_seconds(price, total)
        amount = _billed_duration(price, secs, n)
    else:
        amount = price.per_second * _estimate_seconds(price, total)
    return Cost(amount, price.currency, "estimate", name)


# --- the job listener and cost per sample --------------------------------------------------------

class _Ledger:
    """Cost accumulated per model since its last training step, and for the whole process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.total = ZERO
        self.samples = 0
        self.per_model: dict[str | None, Decimal] = {}

    def add(self, model: str | None, amount: Decimal) -> None:
        with self.lock:
            self.total += amount
            self.per_model[model] = self.per_model.get(model, ZERO) + amount

    def take(self, model: str) -> Decimal:
        with self.lock:
            return self.per_model.pop(model, ZERO) + self.per_model.pop(None, ZERO)


_ledger = _Ledger()
_forksafe.module_locks(__name__, "_catalog_lock")
_forksafe.on_fork(lambda: _forksafe.renew_attr(_ledger, "lock"))


def on_job(record: Any) -> None:
    """Job listener: fill ``record.cost``, ``cost_source``, ``cost_currency`` (or ``priced=False``)."""
    if record.cost is not None:  # the adapter already knows (e.g. a provider-billed figure)
        if record.cost:
            _ledger.add(record.model, record.cost)
        return
    c = price_job(record)
    if c.reason:
        from qobs.contract import Attr

        record.attributes[Attr.COST_REASON] = c.reason
    if c.amount is None:
        record.priced = False
        return
    record.cost, record.cost_currency, record.cost_source = c.amount, c.currency, c.source
    if c.amount:  # a free job changes no ledger
        _ledger.add(record.model, c.amount)


def record_samples(model: str, n: int) -> None:
    """Count ``n`` usable generated samples of ``model`` (``qobs_samples_total``)."""
    from qobs.errors import contained

    with contained("cost"):
        if n <= 0:
            return
        from qobs.metrics import instruments

        instruments()["qobs_samples_total"].child(model).inc(n)
        with _ledger.lock:
            _ledger.samples += n


def cost_since_last_step(model: str) -> Decimal:
    """Cost of the jobs of ``model`` (and of jobs with no model) since the previous call."""
    from qobs.telemetry import drain

    drain()  # the step's jobs, recorded off-thread, are priced by now
    return _ledger.take(model)


def record_step(model: str, step: int, metrics: Mapping[str, Any], *, samples: int | None = None,
                duration_s: float | None = None, span: Any | None = None) -> Decimal:
    """Store a training step with its cost (jobs since the previous step) and samples; returns the cost."""
    from qobs import telemetry

    cost = cost_since_last_step(model)
    if samples:
        record_samples(model, samples)
    telemetry.record_step(model, step, metrics, duration_s=duration_s, samples=samples, cost=cost, span=span)
    return cost


def process_totals() -> dict[str, Any]:
    """Cost and samples seen by this process, with cost per sample (None before any sample)."""
    with _ledger.lock:
        total, samples = _ledger.total, _ledger.samples
    return {"cost": total, "currency": "USD", "samples": samples,
            "cost_per_sample": (total / samples) if samples else None}


def run_cost(conn: Any, run_id: str) -> dict[str, Any]:
    """Cost, samples and cost per sample of a stored run (jobs' cost over steps' samples)."""
    total, unpriced = ZERO, 0
    for (c,) in conn.execute("SELECT cost FROM jobs WHERE run_id = ?", (run_id,)):
        if c is None:
            unpriced += 1
        else:
            total += Decimal(c)
    samples = conn.execute("SELECT COALESCE(SUM(samples), 0) FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
    return {"cost": total, "currency": "USD", "unpriced_jobs": unpriced, "samples": samples,
            "cost_per_sample": (total / samples) if samples else None}
