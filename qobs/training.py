"""Training telemetry for any quantum ML loop: a span per step, contract gauges, a stored step row.

```python
import qobs.training

for i in range(epochs):
    with qobs.training.step(model="qgan", step=i) as s:
        with s.generator():
            ...                      # jobs submitted here are children of the generator span
        with s.discriminator():
            ...
        with s.evaluation():
            ...
        s.record(g_loss=gl, d_loss=dl, grad=g, grad_std=g_se, divergences={"kl": kl, "ks": ks},
                 entropy=h, shot_noise=sn, samples=1024)
```

On leaving the block the figures go to the contract series (``qobs_training_loss{component}``,
``qobs_gradient_norm``, ``qobs_gradient_snr``, ``qobs_model_divergence{metric}``,
``qobs_sample_entropy_bits``, ``qobs_shot_noise``, ``qobs_samples_total``,
``qobs_training_steps_total``), to the step span's attributes, and to the run store (one row per
step). Everything qobs does here is contained: a failure is counted, never raised; exceptions of
the user's own code in the block propagate unchanged (and the step is not counted as completed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from qobs._context import CURRENT_MODEL
from qobs.contract import DIVERGENCE_VALUES, Attr, Span
from qobs.errors import contained

__all__ = ["TrainingStep", "gradient_snr", "step"]

_SPAN_PREFIX = "qobs.training."


class _Series:
    """The cached metric children of one model (one dict lookup per step afterwards)."""

    __slots__ = ("d_loss", "div", "entropy", "g_loss", "grad_norm", "samples", "shot_noise", "snr", "steps")

    def __init__(self, model: str) -> None:
        from qobs.metrics import instruments

        m = instruments()
        self.steps = m["qobs_training_steps_total"].child(model)
        self.g_loss = m["qobs_training_loss"].child(model, "generator")
        self.d_loss = m["qobs_training_loss"].child(model, "discriminator")
        self.grad_norm = m["qobs_gradient_norm"].child(model)
        self.snr = m["qobs_gradient_snr"].child(model)
        self.div = {k: m["qobs_model_divergence"].child(model, k) for k in DIVERGENCE_VALUES}
        self.entropy = m["qobs_sample_entropy_bits"].child(model)
        self.shot_noise = m["qobs_shot_noise"].child(model)
        self.samples = m["qobs_samples_total"].child(model)


_series: dict[str, _Series] = {}
_cost: Any = None  # the qobs.cost module when installed (looked up once), else False


def _cost_module() -> Any:
    global _cost
    if _cost is None:
        _cost = False
        with contained("training"):
            import importlib
            import importlib.util

            if importlib.util.find_spec("qobs.cost") is not None:
                mod = importlib.import_module("qobs.cost")
                if hasattr(mod, "record_samples") and hasattr(mod, "cost_since_last_step"):
                    _cost = mod
    return _cost or None


def gradient_snr(grad: Sequence[float], grad_std: Sequence[float]) -> float | None:
    """Mean |g| over the root-mean-square standard error of the shot-estimated gradient.

    None when the gradient is exact (every standard error 0) or the inputs are empty.
    """
    n = len(grad)
    if n == 0 or len(grad_std) != n:
        return None
    mean_abs = sum(abs(float(g)) for g in grad) / n
    rms_se = math.sqrt(sum(float(s) ** 2 for s in grad_std) / n)
    return None if rms_se == 0 else mean_abs / rms_se


class TrainingStep:
    """One training step: its span (current while the block runs), child spans and recorded figures."""

    def __init__(self, model: str, step: int, attributes: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.step = step
        self.attributes = dict(attributes or {})
        self.values: dict[str, float] = {}
        self.samples: int | None = None
        self.cost: Decimal | None = None
        self.span: Any = None
        self._token: Any = None
        self._model_token: Any = None
        self._t0 = 0.0

    # --- the block ---------------------------------------------------------------------------
    def __enter__(self) -> TrainingStep:
        self._t0 = time.perf_counter()
        self._model_token = CURRENT_MODEL.set(self.model)  # jobs submitted in the step are this model's
        with contained("training"):
            from opentelemetry import context, trace

            from qobs import telemetry

            attrs = {Attr.MODEL: self.model, Attr.STEP: self.step, **self.attributes}
            self.span = telemetry.tracer().start_span(Span.TRAINING_STEP, context=telemetry.default_parent(),
                                                      attributes=attrs)
            self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        duration = time.perf_counter() - self._t0
        with contained("training"):
            if self._model_token is not None:
                CURRENT_MODEL.reset(self._model_token)
                self._model_token = None
        with contained("training"):
            if self._token is not None:
                from opentelemetry import context

                context.detach(self._token)
                self._token = None
        if exc_type is None:
            with contained("training"):
                self._publish(duration)
        with contained("training"):
            self._end_span(exc_type, duration)
        return False

    @contextmanager
    def _child(self, name: str) -> Iterator[Any]:
        span = token = None
        with contained("training"):
            from opentelemetry import context, trace

            from qobs import telemetry

            span = telemetry.tracer().start_span(name, attributes={Attr.MODEL: self.model, Attr.STEP: self.step})
            token = context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as e:
            with contained("training"):
                if span is not None:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, type(e).__name__))
                    span.set_attribute(Attr.ERROR_TYPE, type(e).__name__)
            raise
        finally:
            with contained("training"):
                if token is not None:
                    from opentelemetry import context

                    context.detach(token)
                if span is not None:
                    span.end()

    def generator(self) -> Any:
        """Child span for the generator update (sampling, gradient circuits, optimiser step)."""
        return self._child(Span.GENERATOR_STEP)

    def discriminator(self) -> Any:
        """Child span for the discriminator update."""
        return self._child(Span.DISCRIMINATOR_STEP)

    def evaluation(self) -> Any:
        """Child span for evaluating the model (divergences, entropy)."""
        return self._child(Span.EVALUATION)

    # --- figures -----------------------------------------------------------------------------
    def record(self, *, g_loss: float | None = None, d_loss: float | None = None,
               grad: Sequence[float] | None = None, grad_std: Sequence[float] | None = None,
               grad_norm: float | None = None, grad_snr: float | None = None,
               divergences: Mapping[str, float] | None = None, entropy: float | None = None,
               shot_noise: float | None = None, samples: int | None = None, cost: Decimal | float | None = None,
               **extra: float) -> None:
        """Set this step's figures (published when the block ends). Unknown stays None: not recorded.

        ``grad`` (the generator gradient) gives the gradient norm; with ``grad_std`` (standard error of
        each component from the shots) it gives the SNR. ``grad_norm``/``grad_snr`` set them directly.
        ``divergences`` keys outside kl, js, ks, tvd, w1 are stored but not exported as series.
        """
        with contained("training"):
            v = self.values
            if grad is not None:
                g = [float(x) for x in grad]
                grad_norm = math.sqrt(sum(x * x for x in g)) if grad_norm is None else grad_norm
                if grad_std is not None and grad_snr is None:
                    grad_snr = gradient_snr(g, [float(x) for x in grad_std])
            for key, val in (("g_loss", g_loss), ("d_loss", d_loss), ("grad_norm", grad_norm),
                             ("grad_snr", grad_snr), ("entropy_bits", entropy), ("shot_noise", shot_noise)):
                if val is not None:
                    v[key] = float(val)
            for k, val in (divergences or {}).items():
                if val is not None:
                    v[k] = float(val)
            for k, val in extra.items():
                if val is not None:
                    v[k] = float(val)
            if samples is not None:
                self.samples = int(samples)
            if cost is not None:
                self.cost = Decimal(str(cost))

    def _publish(self, duration: float) -> None:
        from qobs import telemetry

        s = _series.get(self.model)
        if s is None:
            s = _series[self.model] = _Series(self.model)
        v = self.values
        for key, child in (("g_loss", s.g_loss), ("d_loss", s.d_loss), ("grad_norm", s.grad_norm),
                           ("grad_snr", s.snr), ("entropy_bits", s.entropy), ("shot_noise", s.shot_noise)):
            val = v.get(key)
            if val is not None and math.isfinite(val):
                child.set(val)
        for k, child in s.div.items():
            val = v.get(k)
            if val is not None and math.isfinite(val):
                child.set(val)
        cost_mod = _cost_module()
        if cost_mod is not None:
            # qobs.cost counts qobs_samples_total itself and knows the cost of this step's jobs.
            with contained("training.cost"):
                if self.cost is None:
                    self.cost = cost_mod.cost_since_last_step(self.model)
                if self.samples:
                    cost_mod.record_samples(self.model, self.samples)
        elif self.samples:
            s.samples.inc(self.samples)
        s.steps.inc()
        telemetry.record_step(self.model, self.step, {k: val for k, val in v.items() if math.isfinite(val)},
                              duration_s=duration, samples=self.samples, cost=self.cost, span=self.span)

    def _end_span(self, exc_type: type[BaseException] | None, duration: float) -> None:
        span = self.span
        if span is None:
            return
        if span.is_recording():
            span.set_attributes({_SPAN_PREFIX + k: val for k, val in self.values.items() if math.isfinite(val)})
            if self.samples is not None:
                span.set_attribute(_SPAN_PREFIX + "samples", self.samples)
            if exc_type is not None:
                from opentelemetry.trace import Status, StatusCode

                span.set_status(Status(StatusCode.ERROR, exc_type.__name__))
                span.set_attribute(Attr.ERROR_TYPE, exc_type.__name__)
        span.end()


def step(model: str, step: int, **attributes: Any) -> TrainingStep:
    """Open a training step: ``with qobs.training.step(model="qgan", step=i) as s: ...``."""
    return TrainingStep(model, step, attributes)
