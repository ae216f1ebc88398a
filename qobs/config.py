"""Settings from ``qobs.configure(...)`` and the environment.

Standard ``OTEL_*`` variables are honoured; qobs's own use the ``QOBS_`` prefix. Every value is
validated here, so a typo is one clear line naming the variable, not a surprise later.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qobs.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_STORE_OFF = {"off", "none", ""}
PROTOCOLS = ("grpc", "http/protobuf")
TRACE_EXPORTERS = ("otlp", "console", "none")
METRIC_EXPORTERS = ("prometheus", "otlp", "none")
DEFAULT_STORE = ".qobs/runs.db"


@dataclass(frozen=True)
class Settings:
    """Everything qobs can be told. Field docs name the environment variable."""

    enabled: bool = True                      # QOBS_ENABLED (OTEL_SDK_DISABLED turns off OTel export only)
    store: str | None = DEFAULT_STORE          # QOBS_STORE (path, or "off")
    flush_interval: float = 0.5               # QOBS_FLUSH_INTERVAL seconds, at most 1
    service_name: str = "qobs"                # OTEL_SERVICE_NAME
    traces_exporter: str = "none"             # OTEL_TRACES_EXPORTER (otlp when an endpoint is set)
    metrics_exporters: tuple[str, ...] = ()    # OTEL_METRICS_EXPORTER (prometheus, otlp)
    otlp_traces_endpoint: str | None = None    # OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT
    otlp_traces_protocol: str = "grpc"         # OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL
    otlp_metrics_endpoint: str | None = None   # OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT
    otlp_metrics_protocol: str = "grpc"        # OTEL_EXPORTER_OTLP_[METRICS_]PROTOCOL
    prometheus_host: str = "127.0.0.1"        # OTEL_EXPORTER_PROMETHEUS_HOST
    prometheus_port: int = 9464                # OTEL_EXPORTER_PROMETHEUS_PORT
    pushgateway_url: str | None = None         # QOBS_PUSHGATEWAY_URL
    label_limit: int = 64                      # QOBS_LABEL_LIMIT
    record_parameters: bool = False            # QOBS_RECORD_PARAMETERS
    record_results: bool = False               # QOBS_RECORD_RESULTS
    adapters: tuple[str, ...] | None = None    # QOBS_ADAPTERS (comma list; unset = all installed)
    run_id: str | None = None                  # QOBS_RUN_ID (set by `qobs run`)
    run_name: str | None = None                # QOBS_RUN_NAME
    prices: str | None = None                  # QOBS_PRICES (price catalog file, YAML or JSON)
    budgets: str | None = None                 # QOBS_BUDGETS (budget file, YAML or JSON)
    fidelity_sample: float = 0.02              # QOBS_FIDELITY_SAMPLE (fraction of eligible jobs probed)
    fidelity_seed: int = 0                     # QOBS_FIDELITY_SEED (sampling is deterministic given it)
    fidelity_baseline: float | None = None     # QOBS_FIDELITY_BASELINE (pinned; else mean of the first checks)
    fidelity_baseline_checks: int = 5          # QOBS_FIDELITY_BASELINE_CHECKS
    fidelity_tolerance: float = 0.10           # QOBS_FIDELITY_TOLERANCE (relative drop that fails a check)
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def serve_prometheus(self) -> bool:
        return "prometheus" in self.metrics_exporters

    @property
    def otlp_metrics(self) -> bool:
        return "otlp" in self.metrics_exporters


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of true, false, 1, 0, yes, no, on, off")


def _number(env: Mapping[str, str], name: str, default: float, kind: type, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a{'n integer' if kind is int else ' number'}") from None
    if not lo <= value <= hi:
        bounds = f"{int(lo)} and {int(hi)}" if kind is int else f"{lo:g} and {hi:g}"
        raise ConfigError(f"{name}={raw!r}: must be between {bounds}")
    return value


def _choice(env: Mapping[str, str], names: tuple[str, ...], default: str, allowed: tuple[str, ...]) -> str:
    for name in names:
        raw = env.get(name)
        if raw is not None and raw.strip():
            v = raw.strip().lower()
            if v not in allowed:
                raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
            return v
    return default


def _endpoint(env: Mapping[str, str], specific: str) -> str | None:
    for name in (specific, "OTEL_EXPORTER_OTLP_ENDPOINT"):
        raw = env.get(name, "").strip()
        if raw:
            if not raw.startswith(("http://", "https://")):
                raise ConfigError(f"{name}={raw!r}: expected a URL starting with http:// or https://")
            return raw
    return None


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment, then apply keyword overrides. Raises ConfigError."""
    env = os.environ if env is None else env
    enabled = _bool(env, "QOBS_ENABLED", True)
    # OpenTelemetry's export only (store, budgets, scrape stay), and read as OpenTelemetry does: "true" alone.
    otel_off = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    store_raw = env.get("QOBS_STORE", DEFAULT_STORE).strip()
    store = None if store_raw.lower() in _STORE_OFF else store_raw
    traces_endpoint = _endpoint(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    metrics_endpoint = _endpoint(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    traces_exporter = _choice(env, ("OTEL_TRACES_EXPORTER",), "otlp" if traces_endpoint else "none",
                              TRACE_EXPORTERS)
    raw_metrics = env.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    metrics_exporters = tuple(x.strip() for x in raw_metrics.split(",") if x.strip())
    for x in metrics_exporters:
        if x not in METRIC_EXPORTERS:
            raise ConfigError(f"OTEL_METRICS_EXPORTER={raw_metrics!r}: unknown exporter {x!r}; "
                              f"expected {', '.join(METRIC_EXPORTERS)}")
    if _bool(env, "QOBS_METRICS_SERVE", False) and "prometheus" not in metrics_exporters:
        metrics_exporters += ("prometheus",)
    metrics_exporters = tuple(x for x in metrics_exporters if x != "none" and not (otel_off and x == "otlp"))
    if otel_off:
        traces_exporter = "none"
    adapters_raw = env.get("QOBS_ADAPTERS", "").strip()
    push = env.get("QOBS_PUSHGATEWAY_URL", "").strip() or None
    if push and not push.startswith(("http://", "https://")):
        raise ConfigError(f"QOBS_PUSHGATEWAY_URL={push!r}: expected a URL starting with http:// or https://")
    settings = Settings(
        enabled=enabled,
        store=store,
        flush_interval=_number(env, "QOBS_FLUSH_INTERVAL", 0.5, float, 0.01, 1.0),
        service_name=env.get("OTEL_SERVICE_NAME", "").strip() or "qobs",
        traces_exporter=traces_exporter,
        metrics_exporters=metrics_exporters,
        otlp_traces_endpoint=traces_endpoint,
        otlp_traces_protocol=_choice(env, ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
                                     "grpc", PROTOCOLS),
        otlp_metrics_endpoint=metrics_endpoint,
        otlp_metrics_protocol=_choice(env, ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
                                      "grpc", PROTOCOLS),
        prometheus_host=env.get("OTEL_EXPORTER_PROMETHEUS_HOST", "").strip() or "127.0.0.1",
        prometheus_port=int(_number(env, "OTEL_EXPORTER_PROMETHEUS_PORT", 9464, int, 0, 65535)),
        pushgateway_url=push,
        label_limit=int(_number(env, "QOBS_LABEL_LIMIT", 64, int, 1, 100_000)),
        record_parameters=_bool(env, "QOBS_RECORD_PARAMETERS", False),
        record_results=_bool(env, "QOBS_RECORD_RESULTS", False),
        adapters=tuple(a.strip() for a in adapters_raw.split(",") if a.strip()) if adapters_raw else None,
        run_id=env.get("QOBS_RUN_ID", "").strip() or None,
        run_name=env.get("QOBS_RUN_NAME", "").strip() or None,
        prices=env.get("QOBS_PRICES", "").strip() or None,
        budgets=env.get("QOBS_BUDGETS", "").strip() or None,
        fidelity_sample=_number(env, "QOBS_FIDELITY_SAMPLE", 0.02, float, 0.0, 1.0),
        fidelity_seed=int(_number(env, "QOBS_FIDELITY_SEED", 0, int, 0, 2**63 - 1)),
        fidelity_baseline=_number(env, "QOBS_FIDELITY_BASELINE", None, float, 0.0, 1.0),  # type: ignore[arg-type]
        fidelity_baseline_checks=int(_number(env, "QOBS_FIDELITY_BASELINE_CHECKS", 5, int, 1, 10_000)),
        fidelity_tolerance=_number(env, "QOBS_FIDELITY_TOLERANCE", 0.10, float, 0.0, 1.0),
        extra={k: v for k, v in env.items() if k.startswith("QOBS_")},
    )
    return replace(settings, **overrides) if overrides else settings


def replace(settings: Settings, **overrides: object) -> Settings:
    """Apply keyword overrides, rejecting unknown names with one clear line."""
    known = {f.name for f in dataclasses.fields(Settings)}
    for k in overrides:
        if k not in known:
            raise ConfigError(f"qobs.configure: unknown setting {k!r}; known: {', '.join(sorted(known))}")
    store = overrides.get("store")
    if isinstance(store, str) and store.strip().lower() in _STORE_OFF:
        overrides["store"] = None  # `--store off` / configure(store="off") turn the store off, not name a file
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


def store_path(settings: Settings) -> Path | None:
    """The store's absolute path (a program that changes directory keeps writing to the same store)."""
    return None if settings.store is None else Path(os.path.abspath(Path(settings.store).expanduser()))
