"""OpenTelemetry set-up: reuse the application's tracer/meter provider, or make ours.

Nothing is exported unless an exporter is configured (``OTEL_TRACES_EXPORTER``, an OTLP endpoint,
or ``OTEL_METRICS_EXPORTER=otlp``). Exporters run on the SDK's background threads; at exit they get
a bounded time to flush, so a dead collector costs the user at most that, never an error. A collector
that refuses the connection outright costs not even that: its flush is skipped, with one line said.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any
from urllib.parse import urlparse

from qobs.config import Settings

EXIT_FLUSH_SECONDS = 2.0
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"  # OpenTelemetry's defaults, when no endpoint is set
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
EXPORT_TIMEOUT_SECONDS = 5.0


def _signal_url(endpoint: str, protocol: str, signal: str) -> str:
    if protocol == "http/protobuf" and urlparse(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + f"/v1/{signal}"
    return endpoint


log = logging.getLogger("qobs")
PROBE_TIMEOUT_S = 0.25
_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy")


def _target(endpoint: str | None, protocol: str) -> tuple[str, int] | None:
    """The (host, port) an OTLP exporter connects to, when it can be told: a URL with its port, or the default
    endpoint. None when a proxy may carry HTTP export, or the port is left to the exporter."""
    if protocol != "grpc" and any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    u = urlparse(endpoint or (DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT))
    try:
        port = u.port
    except ValueError:
        return None
    return (u.hostname, port) if u.hostname and port else None


def _refused(target: tuple[str, int] | None) -> bool:
    """Whether the collector at ``target`` refuses a connection outright (nothing listens there). Any other
    outcome, a timeout included, is left to the bounded flush."""
    if target is None:
        return False
    try:
        with socket.create_connection(target, timeout=PROBE_TIMEOUT_S):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _span_exporter(settings: Settings) -> Any:
    if settings.traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    endpoint = settings.otlp_traces_endpoint
    if settings.otlp_traces_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS) if endpoint else Grpc(
            timeout=EXPORT_TIMEOUT_SECONDS)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    url = _signal_url(endpoint or DEFAULT_HTTP_ENDPOINT, "http/protobuf", "traces")
    return Http(endpoint=url, timeout=EXPORT_TIMEOUT_SECONDS)


def _metric_exporter(settings: Settings) -> Any:
    endpoint = settings.otlp_metrics_endpoint
    if settings.otlp_metrics_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS) if endpoint else Grpc(
            timeout=EXPORT_TIMEOUT_SECONDS)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    url = _signal_url(endpoint or DEFAULT_HTTP_ENDPOINT, "http/protobuf", "metrics")
    return Http(endpoint=url, timeout=EXPORT_TIMEOUT_SECONDS)


class _Switch:
    """The one span processor on the provider qobs sets globally; each pipeline start plugs in its exporter.

    OpenTelemetry lets a process set its global tracer provider once, so a restarted pipeline
    (``qobs.configure`` while running, ``instrument`` after ``uninstrument``) keeps that provider
    and swaps the batch processor behind this switch instead of making a provider nobody uses.
    """

    def __init__(self) -> None:
        self.delegate: Any | None = None

    def on_start(self, span: Any, parent_context: Any | None = None) -> None:
        d = self.delegate
        if d is not None:
            d.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:  # newer SDKs call it on every processor
        d = self.delegate
        if d is not None and hasattr(d, "_on_ending"):
            d._on_ending(span)

    def on_end(self, span: Any) -> None:
        d = self.delegate
        if d is not None:
            d.on_end(span)

    def shutdown(self) -> None:
        d, self.delegate = self.delegate, None
        if d is not None:
            d.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        d = self.delegate
        return True if d is None else d.force_flush(timeout_millis)


# The providers qobs set globally in this process (kept across pipeline restarts), or None.
_ours: dict[str, Any] = {}


class Tracing:
    """The tracer qobs uses, and what it owns and must shut down."""

    def __init__(self, settings: Settings) -> None:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace

        self.owned_processor: Any | None = None
        self.owned_meter_provider: Any | None = None
        self.meter: Any | None = None
        # where each owned exporter sends (None: a console exporter, or a target that cannot be told)
        self._targets: dict[str, tuple[str, int] | None] = {"spans": None, "metrics": None}
        current = trace.get_tracer_provider()
        ours = _ours.get("tracer_provider")
        app_has_provider = not isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        if settings.traces_exporter != "none" and (current is ours or not app_has_provider):
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            if current is not ours:
                from opentelemetry.sdk.resources import Resource
                from opentelemetry.sdk.trace import TracerProvider

                resource = Resource.create({"service.name": settings.service_name})
                provider = TracerProvider(resource=resource, shutdown_on_exit=False)  # our exit flush is bounded
                switch = _Switch()
                provider.add_span_processor(switch)  # type: ignore[arg-type]
                trace.set_tracer_provider(provider)
                _ours.update(tracer_provider=provider, switch=switch)
            processor = BatchSpanProcessor(_span_exporter(settings), max_queue_size=16384, schedule_delay_millis=1000)
            _ours["switch"].delegate = self.owned_processor = processor
            if settings.traces_exporter == "otlp":
                self._targets["spans"] = _target(settings.otlp_traces_endpoint, settings.otlp_traces_protocol)
        from qobs import __version__

        self.tracer = trace.get_tracer("qobs", __version__)
        if settings.otlp_metrics:
            current_mp = otel_metrics.get_meter_provider()
            if type(current_mp).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
                from opentelemetry.sdk.metrics import MeterProvider
                from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
                from opentelemetry.sdk.resources import Resource

                reader = PeriodicExportingMetricReader(_metric_exporter(settings), export_interval_millis=5000)
                mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False,
                                   resource=Resource.create({"service.name": settings.service_name}))
                otel_metrics.set_meter_provider(mp)
                _ours["meter_provider"] = mp
            if otel_metrics.get_meter_provider() is _ours.get("meter_provider"):
                self.owned_meter_provider = _ours["meter_provider"]
                self._targets["metrics"] = _target(settings.otlp_metrics_endpoint, settings.otlp_metrics_protocol)
            self.meter = otel_metrics.get_meter("qobs", __version__)

    def shutdown(self, timeout: float = EXIT_FLUSH_SECONDS, *, final: bool = False) -> None:
        """Flush (and at exit stop) what we own, giving up after ``timeout`` seconds (a dead collector).

        Our span processor is stopped and unplugged every time; the global providers are only shut
        down when ``final`` (they cannot be replaced in this process).
        """
        processor, mp = self.owned_processor, self.owned_meter_provider
        if processor is None and mp is None:
            return
        switch = _ours.get("switch")
        if switch is not None and switch.delegate is processor:
            switch.delegate = None  # new spans go nowhere until a pipeline plugs in again

        def stop() -> None:
            for p, shut, kind in ((processor, True, "spans"), (mp, final, "metrics")):
                if p is None:
                    continue
                target = self._targets[kind]
                if _refused(target):  # nothing listens there: a flush would only retry until its timeout
                    log.warning("qobs: the OTLP collector at %s:%s refused the connection; %s not yet exported "
                                "are dropped", target[0], target[1], kind)
                    continue
                try:
                    p.force_flush(int(timeout * 1000))
                    if shut:
                        p.shutdown()
                except Exception:  # noqa: BLE001
                    pass

        t = threading.Thread(target=stop, name="qobs-otel-shutdown", daemon=True)
        t.start()
        t.join(timeout + 0.5)
