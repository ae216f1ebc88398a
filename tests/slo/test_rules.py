"""Generated rules: committed output has not drifted, every series is in the contract, and real
promtool lints them and runs the generated behaviour suites."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from qobs import contract
from qobs.slo import rules, spec
from qobs.slo.cli import render

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "alerts"
REGEN = "qobs alerts build -o alerts"


def _all_exprs(files: dict[str, str]) -> list[tuple[str, dict]]:
    import yaml

    out = []
    for name, text in files.items():
        if name.endswith(".rules.yml"):
            for g in yaml.safe_load(text)["groups"]:
                out += [(name, r) for r in g["rules"]]
    return out


def test_committed_alerts_match_the_generator():
    files = render(None)
    on_disk = {str(p.relative_to(ALERTS)) for p in ALERTS.rglob("*") if p.is_file()}
    assert on_disk == set(files), f"alerts/ has other files than the generator writes; run `{REGEN}`"
    for rel, text in files.items():
        assert (ALERTS / rel).read_bytes() == text.encode(), f"alerts/{rel} drifted from the generator; run `{REGEN}`"


def test_every_metric_in_every_rule_is_in_the_contract():
    rs = _all_exprs(render(None))
    assert len(rs) > 100
    seen = set()
    for name, r in rs:
        names = rules.metric_names(r["expr"])
        for n in names:
            assert n in contract.METRICS_BY_NAME, f"{name}: {r.get('alert') or r.get('record')} reads unknown {n}"
        seen |= names
    for ident in ("slo:sli_error:ratio_rate5m", "slo:sli_events:increase1h"):
        assert rules.metric_names(ident) == set()
    assert {"qobs_jobs_total", "qobs_job_duration_seconds", "qobs_shot_budget_used_shots",
            "qobs_money_budget_limit_usd", "qobs_fidelity_baseline", "qobs_calibration_age_seconds",
            "qobs_gradient_snr", "qobs_queue_duration_seconds", "qobs_cost_usd_total"} <= seen


def test_latency_slis_use_exact_contract_buckets():
    s = spec.load()
    latency = [slo for slo in s.slos if slo.sli.kind == "latency"]
    assert {slo.sli.name for slo in latency} >= {"sample_latency_simulator", "sample_latency_hardware",
                                                  "transpile_latency"}
    for slo in latency:
        m = contract.metric(slo.sli.total_metric)
        assert slo.threshold in (m.buckets or ()), slo.name
        q = rules.sli_query(slo)
        assert q.good == f'{m.name}_bucket{{le="{rules.le_value(slo.threshold)}"' + (
            ", " + ", ".join(slo.selector) + "}" if slo.selector else "}")
    by = {slo.sli.name: slo.threshold for slo in latency}
    assert by["sample_latency_simulator"] == 0.2 and by["sample_latency_hardware"] == 1.0
    assert by["transpile_latency"] == 30.0
    # The le value is what prometheus_client writes for that bound.
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    Histogram("x_seconds", "x", buckets=contract.metric("qobs_job_duration_seconds").buckets, registry=reg).observe(0.1)
    text = generate_latest(reg).decode()
    assert 'x_seconds_bucket{le="0.2"} 1.0' in text and 'x_seconds_bucket{le="1.0"} 1.0' in text


def test_every_alert_has_summary_description_with_value_and_runbook():
    for name, r in _all_exprs(render(None)):
        if "alert" not in r:
            continue
        a = r["annotations"]
        assert a["summary"] and a["runbook_url"] == f"https://runbooks.example/qobs/{r['alert']}", (name, r["alert"])
        assert "{{ $value" in a["description"] or "absent(" in r["expr"], (name, r["alert"])
        assert r["labels"]["severity"] in ("page", "ticket")
        if "BudgetBurn" in r["alert"]:
            assert {"slo", "burnrate_tier"} <= set(r["labels"])
            # Ratio of sums of increases, grouped by backend: never an average of ratios, never per job.
    for name, r in _all_exprs(render(None)):
        if r.get("record", "").startswith("slo:sli_error"):
            assert "sum by (backend) (increase(" in r["expr"] and "avg" not in r["expr"], name


def test_runbook_pattern_is_configurable():
    s = spec.parse({"runbook_url": "https://wiki.example/{sli}/{alert}",
                    "slos": [{"name": "a", "sli": "job_success", "objective": 0.99, "window": "30d"}]})
    text = rules.build(s)["slo-a.rules.yml"]
    assert "runbook_url: https://wiki.example/job_success/QobsJobSuccessBudgetBurn" in text


@pytest.mark.real_tools
def test_promtool_check_rules_lint_on_everything_generated(promtool, tmp_path):
    files = render(None)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    rule_files = sorted(str(p) for p in tmp_path.glob("*.rules.yml"))
    res = subprocess.run([promtool, "check", "rules", "--lint=all", "--lint-fatal", *rule_files],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(rule_files)


@pytest.mark.real_tools
@pytest.mark.slow
def test_promtool_runs_the_generated_behaviour_suites(promtool, tmp_path):
    """Every alert and tier: exact-factor burns fire at their detection time and not before, clear
    within the short window, 1x raises only tickets, low traffic and missing data do not page,
    budget bands fire once each, health alerts fire after their ``for``. Takes a few minutes."""
    files = render(None)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    tests = sorted(tmp_path.glob("tests/*.test.yml"))
    assert len(tests) == len(list(tmp_path.glob("*.rules.yml"))) + 1  # + the hourly spend-rate suite

    def run(p: Path) -> tuple[Path, subprocess.CompletedProcess]:
        return p, subprocess.run([promtool, "test", "rules", str(p)], capture_output=True, text=True, timeout=1800)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, tests))
    failed = [f"{p.name}:\n{r.stdout}{r.stderr}" for p, r in results if r.returncode != 0]
    assert not failed, "\n".join(failed)


def test_generated_suites_cover_every_alert_and_tier():
    import yaml

    s = spec.load()
    files = render(None)
    for slo in s.slos:
        suite = yaml.safe_load(files[f"tests/slo-{slo.name}.test.yml"])
        names = " | ".join(g["name"] for g in suite["tests"])
        for t in slo.tiers:
            assert f"raises {t.name} ({t.severity})" in names, (slo.name, t.name)
        assert "raises only ticket tiers, never a page" in names
        assert "one failed job out of two does not page" in names
        assert "missing series raise only" in names
    health = yaml.safe_load(files["tests/qobs-health.test.yml"])["tests"]
    spend = yaml.safe_load(files["tests/qobs-health-spend.test.yml"])["tests"]
    covered = " ".join(g["name"] for g in health + spend)
    for alert in ("QobsShotBudgetConsumed", "QobsMoneyBudgetConsumed", "QobsSpendRateHigh", "QobsFidelityDrift",
                  "QobsCalibrationStale", "QobsBarrenPlateau", "QobsQueueTimeHigh"):
        assert alert in covered


def test_every_alert_has_a_generated_runbook_showing_its_rules():
    files = render(None)
    pages = {rel.removeprefix("runbooks/").removesuffix(".md"): text for rel, text in files.items()
             if rel.startswith("runbooks/")}
    alerts_seen = set()
    for _name, r in _all_exprs(files):
        if "alert" not in r:
            continue
        alerts_seen.add(r["alert"])
        page = pages[r["alert"]]
        assert r["annotations"]["runbook_url"].endswith("/" + r["alert"])  # the URL pattern names the page
        assert all(line.strip() in page for line in r["expr"].splitlines() if line.strip()), r["alert"]
        for section in ("## What it means", "## How to look", "## What to do"):
            assert section in page
    assert set(pages) == alerts_seen  # no page without an alert, no alert without a page
