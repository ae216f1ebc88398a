"""OpenTelemetry set-up: reuse the application's tracer/meter provider, or make ours.

Nothing is exported unless an exporter is configured (``OTEL_TRACES_EXPORTER``, an OTLP endpoint,
or ``OTEL_METRICS_EXPORTER=otlp``). Exporters run on the SDK's background threads; at exit they get
a bounded time to flush, so a dead collector costs the user at most that, never an error.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

from qobs.config import Settings

EXIT_FLUSH_SECONDS = 2.0
EXPORT_TIMEOUT_SECONDS = 5.0


def _signal_url(endpoint: str, protocol: str, signal: str) -> str:
    if protocol == "http/protobuf" and urlparse(endpoint).path in ("", "/"):
        return endpoint.rstrip("/") + f"/v1/{signal}"
    return endpoint


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

    url = _signal_url(endpoint or "http://localhost:4318", "http/protobuf", "traces")
    return Http(endpoint=url, timeout=EXPORT_TIMEOUT_SECONDS)


def _metric_exporter(settings: Settings) -> Any:
    endpoint = settings.otlp_metrics_endpoint
    if settings.otlp_metrics_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

        return Grpc(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS) if endpoint else Grpc(
            timeout=EXPORT_TIMEOUT_SECONDS)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    url = _signal_url(endpoint or "http://localhost:4318", "http/protobuf", "metrics")
    return Http(endpoint=url, timeout=EXPORT_TIMEOUT_SECONDS)


class Tracing:
    """The tracer qobs uses, and what it owns and must shut down."""

    def __init__(self, settings: Settings) -> None:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace

        self.owned_tracer_provider: Any | None = None
        self.owned_meter_provider: Any | None = None
        self.meter: Any | None = None
        current = trace.get_tracer_provider()
        app_has_provider = not isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
        if not app_has_provider and settings.traces_exporter != "none":
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create({"service.name": settings.service_name})
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings), max_queue_size=16384,
                                                           schedule_delay_millis=1000))
            trace.set_tracer_provider(provider)
            self.owned_tracer_provider = provider
        from qobs import __version__

        self.tracer = trace.get_tracer("qobs", __version__)
        if settings.otlp_metrics:
            current_mp = otel_metrics.get_meter_provider()
            if type(current_mp).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
                from opentelemetry.sdk.metrics import MeterProvider
                from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
                from opentelemetry.sdk.resources import Resource

                reader = PeriodicExportingMetricReader(_metric_exporter(settings), export_interval_millis=5000)
                mp = MeterProvider(metric_readers=[reader],
                                   resource=Resource.create({"service.name": settings.service_name}))
                otel_metrics.set_meter_provider(mp)
                self.owned_meter_provider = mp
            self.meter = otel_metrics.get_meter("qobs", __version__)

    def shutdown(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Flush and stop what we own, giving up after ``timeout`` seconds (a dead collector)."""
        owned = [p for p in (self.owned_tracer_provider, self.owned_meter_provider) if p is not None]
        if not owned:
            return

        def stop() -> None:
            for p in owned:
                try:
                    p.force_flush(int(timeout * 1000))
                    p.shutdown()
                except Exception:  # noqa: BLE001
                    pass

        t = threading.Thread(target=stop, name="qobs-otel-shutdown", daemon=True)
        t.start()
        t.join(timeout + 0.5)
