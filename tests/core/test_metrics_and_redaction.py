"""The cardinality guard, contract-built instruments, and credential redaction."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from qobs import contract
from qobs.metrics import Instruments
from qobs.redact import REDACTED, redact, redact_argv, redact_text


def test_label_guard_folds_values_past_the_limit(metric):
    reg = CollectorRegistry()
    ins = Instruments(reg, limit=3)
    fam = ins["qobs_jobs_total"]
    before = metric("qobs_label_overflow_total", metric="qobs_jobs_total", label="backend")
    for i in range(5):
        fam.child(f"backend{i}", "p", "sampler", "ok").inc()
    fam.child("backend0", "p", "sampler", "ok").inc()  # a seen value is never folded
    text = generate_latest(reg).decode()
    for i in range(3):
        assert f'backend="backend{i}"' in text
    assert 'backend="backend3"' not in text and 'backend="other"' in text
    assert reg.get_sample_value("qobs_jobs_total", {"backend": "other", "provider": "p", "operation": "sampler",
                                                    "status": "ok"}) == 2
    assert reg.get_sample_value("qobs_jobs_total", {"backend": "backend0", "provider": "p", "operation": "sampler",
                                                    "status": "ok"}) == 2
    assert metric("qobs_label_overflow_total", metric="qobs_jobs_total", label="backend") == before + 2
    # Closed labels (status) are never folded: they are an enumeration, not user data.
    for status in contract.STATUS_VALUES:
        fam.child("backend0", "p", "sampler", status).inc()
    assert reg.get_sample_value("qobs_jobs_total", {"backend": "backend0", "provider": "p", "operation": "sampler",
                                                    "status": "cancelled"}) == 1


def _samples(reg: CollectorRegistry, name: str) -> list[tuple[str, dict[str, str], float]]:
    return sorted(((s.name, dict(s.labels), s.value) for fam in reg.collect() if fam.name == name
                   for s in fam.samples if not s.name.endswith("_created")), key=lambda t: (t[0], sorted(t[1].items())))


def test_fast_series_expose_what_the_client_itself_would():
    """qobs's counters and histograms skip the client's per-call checks and linear bucket scan; the
    exposition must be what prometheus_client's own ``inc``/``observe`` give for the same values."""
    ours, ref = CollectorRegistry(), CollectorRegistry()
    ins = Instruments(ours)
    m = contract.metric("qobs_job_duration_seconds")
    from prometheus_client import Counter, Histogram

    hist = Histogram(m.client_name, m.help, m.labels, buckets=m.buckets, registry=ref)
    c = contract.metric("qobs_shots_total")
    cnt = Counter(c.client_name, c.help, c.labels, registry=ref)
    bounds = list(m.buckets or ())
    values = [0.0, -1.0, float("inf"), float("nan"), 1e9, *bounds, *(b * 1.0001 for b in bounds),
              *(b * 0.9999 for b in bounds)]
    for v in values:
        ins["qobs_job_duration_seconds"].child("aer", "sampler").observe(v)
        hist.labels("aer", "sampler").observe(v)
    # A recorder batch observes many values at once: one update per bucket, the same exposition.
    finite = [v for v in reversed(values) if v == v and abs(v) != float("inf")]  # finite[0] != 0
    for op, batch in (("estimator", values), ("backend_run", finite), ("one", [0.3])):
        ins["qobs_job_duration_seconds"].child("aer", op).observe_many(batch)
        for v in batch:
            hist.labels("aer", op).observe(v)
    for v in (1, 1024, 2.5, 0):
        ins["qobs_shots_total"].child("aer", "p", "forward").inc(v)
        cnt.labels("aer", "p", "forward").inc(v)
    for name in ("qobs_job_duration_seconds", "qobs_shots"):
        got, want = _samples(ours, name), _samples(ref, name)
        assert got and len(got) == len(want)
        for (gn, gl, gv), (wn, wl, wv) in zip(got, want, strict=True):
            assert (gn, gl) == (wn, wl)
            assert gv == wv or (gv != gv and wv != wv) or (gn.endswith("_sum") and gv == pytest.approx(wv)), \
                (gn, gl, gv, wv)  # NaN sums compare as NaN; a batch's sum may round apart in the last bit
    try:
        ins["qobs_shots_total"].child("aer", "p", "forward").inc(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("a counter took a negative increment")


def test_histogram_buckets_sit_on_slo_thresholds():
    for name, (series, bound) in contract.SLO_THRESHOLDS.items():
        m = contract.metric(series)
        assert m.kind == "histogram" and bound in (m.buckets or ()), name
    assert {0.2, 1.0, 5.0} <= set(contract.metric("qobs_job_duration_seconds").buckets or ())


def test_contract_names_follow_prometheus_conventions():
    for m in contract.METRICS:
        assert m.name.startswith("qobs_")
        assert (m.kind == "counter") == m.name.endswith("_total"), m.name
        assert set(m.closed) <= set(m.labels)
        assert not {"job_id", "run_id", "trace_id", "parameters"} & set(m.labels), m.name


def test_redaction_of_urls_options_and_argv():
    assert redact_text("https://user:hunter2@quantum.example/api") == f"https://{REDACTED}@quantum.example/api"
    assert "abc123" not in redact_text("https://q.example/jobs?api_key=abc123&x=1")
    assert redact_text("Authorization: Bearer eyJhbGciOi.x.y") == f"Authorization: Bearer {REDACTED}"
    assert redact_text("token=abc123 shots=100") == f"token={REDACTED} shots=100"
    opts = {"token": "ibm-secret", "channel": "ibm_quantum", "nested": {"password": "pw", "shots": 100},
            "url": "https://u:p@host/", "instance": "hub/group/project"}
    out = redact(opts)
    assert out["token"] == REDACTED and out["nested"]["password"] == REDACTED and out["nested"]["shots"] == 100
    assert out["url"] == f"https://{REDACTED}@host/" and out["instance"] == "hub/group/project"
    assert redact_argv(["train.py", "--token", "t0k", "--api-key=k3y", "--epochs", "3"]) == [
        "train.py", "--token", REDACTED, f"--api-key={REDACTED}", "--epochs", "3"]
