"""Training telemetry: qobs.training reaches the contract series, the spans and the run store."""

from __future__ import annotations

import sqlite3

import pytest

import qobs
from qobs import training


def test_step_api_reaches_contract_metrics_and_store(qobs_run, metric):
    before = metric("qobs_training_steps_total", model="m1")
    samples_before = metric("qobs_samples_total", model="m1")
    for i in range(3):
        with training.step(model="m1", step=i) as s:
            with s.generator():
                pass
            with s.discriminator():
                pass
            with s.evaluation():
                pass
            s.record(g_loss=0.7, d_loss=1.3, grad=[3.0, 4.0], grad_std=[1.0, 1.0],
                     divergences={"kl": 0.05, "js": 0.01, "ks": 0.07, "tvd": 0.1, "w1": 0.2},
                     entropy=2.5, shot_noise=0.01, samples=1024)
    qobs.flush()
    assert metric("qobs_training_steps_total", model="m1") == before + 3
    assert metric("qobs_samples_total", model="m1") == samples_before + 3 * 1024
    assert metric("qobs_training_loss", model="m1", component="generator") == 0.7
    assert metric("qobs_training_loss", model="m1", component="discriminator") == 1.3
    assert metric("qobs_gradient_norm", model="m1") == 5.0
    assert metric("qobs_gradient_snr", model="m1") == 3.5  # mean |g| 3.5 over rms std error 1
    for k, v in {"kl": 0.05, "js": 0.01, "ks": 0.07, "tvd": 0.1, "w1": 0.2}.items():
        assert metric("qobs_model_divergence", model="m1", metric=k) == v
    assert metric("qobs_sample_entropy_bits", model="m1") == 2.5
    assert metric("qobs_shot_noise", model="m1") == 0.01
    rows = sqlite3.connect(qobs_run).execute("SELECT step, samples, metrics FROM steps WHERE model = 'm1'").fetchall()
    assert [r[0] for r in rows] == [0, 1, 2] and all(r[1] == 1024 for r in rows)
    assert '"kl": 0.05' in rows[0][2] and '"grad_snr": 3.5' in rows[0][2]


def test_user_error_propagates_and_step_not_counted(qobs_run, metric):
    before = metric("qobs_training_steps_total", model="m2")
    with pytest.raises(ZeroDivisionError), training.step(model="m2", step=0) as s, s.generator():
        1 / 0  # noqa: B018
    assert metric("qobs_training_steps_total", model="m2") == before


def test_step_spans_nest_and_parent_jobs(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from qobs import telemetry
    from qobs.contract import Attr, Span

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(telemetry, "tracer", lambda: provider.get_tracer("test"))
    with training.step(model="m3", step=7) as s:
        with s.generator():
            from opentelemetry import trace

            inner = trace.get_current_span()
        s.record(g_loss=1.0, divergences={"kl": 0.2})
    spans = {sp.name: sp for sp in exporter.get_finished_spans()}
    step_span, gen = spans[Span.TRAINING_STEP], spans[Span.GENERATOR_STEP]
    assert gen.parent.span_id == step_span.context.span_id
    assert inner.get_span_context().span_id == gen.context.span_id  # jobs submitted here are its children
    assert step_span.attributes[Attr.MODEL] == "m3" and step_span.attributes[Attr.STEP] == 7
    assert step_span.attributes["qobs.training.kl"] == 0.2


@pytest.mark.slow
def test_training_run_is_observed_end_to_end(qobs_run, metric):
    """A short instrumented run on Aer: steps and samples in the store, gauges set, jobs seen by the adapter."""
    from reference_qgan.train import TrainConfig, train

    before = metric("qobs_training_steps_total", model="qgan")
    r = train(TrainConfig(epochs=5, seed=0, sdk="qiskit", backend="aer", shots=128))
    qobs.flush()
    assert metric("qobs_training_steps_total", model="qgan") == before + 5
    assert metric("qobs_model_divergence", model="qgan", metric="kl") == pytest.approx(r.history[-1]["kl"])
    assert metric("qobs_gradient_snr", model="qgan") > 0
    conn = sqlite3.connect(qobs_run)
    assert conn.execute("SELECT COUNT(*), SUM(samples) FROM steps WHERE model = 'qgan'").fetchone() == (5, 5 * 128)
    jobs = conn.execute("SELECT COUNT(*), SUM(circuits), SUM(shots) FROM jobs").fetchone()
    import importlib.util

    if importlib.util.find_spec("qobs_qiskit") is not None and jobs[0]:
        assert jobs == (5, 5 * 37, 5 * 37 * 128)  # one job per step holding all 2P+1 circuits
