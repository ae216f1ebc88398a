"""Alertmanager inhibit rules for overlapping SLOs, checked by real ``amtool`` and applied by a real Alertmanager.

The alerts posted to Alertmanager carry the labels of the committed rule files' own alerts (read from them,
not written here), so the test fails if the rules and the inhibit rules stop agreeing on labels.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from qobs.slo import rules, spec
from qobs.slo.cli import render
from tests.conftest import free_port, wait_http

ALERTS = Path(__file__).resolve().parents[2] / "alerts"


def _config(tmp_path: Path) -> Path:
    inhibit = yaml.safe_load((ALERTS / rules.INHIBIT_FILE).read_text())
    cfg = {"route": {"receiver": "null", "group_by": ["alertname"]}, "receivers": [{"name": "null"}], **inhibit}
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _labels(slo: str, tier: str) -> dict[str, str]:
    """The labels the committed rule file of ``slo`` gives its burn-rate alert of ``tier``."""
    groups = yaml.safe_load((ALERTS / f"slo-{slo}.rules.yml").read_text())["groups"]
    for r in groups[0]["rules"]:
        if "alert" in r and r["labels"].get("burnrate_tier") == tier:
            return {"alertname": r["alert"], **r["labels"]}
    raise AssertionError(f"no {tier} alert for {slo}")


def test_inhibit_rules_are_generated_for_overlapping_slos_only(tmp_path):
    s = spec.load(None)
    got = rules.inhibitions(s)["inhibit_rules"]
    job_success = [o.name for o in s.slos if o.sli.name == "job_success"]
    assert len(job_success) == 3 and len(got) == 2  # each tier mutes the ones listed after it
    assert got[0]["source_matchers"] == [f'slo="{job_success[0]}"']
    assert got[0]["target_matchers"] == [f'slo=~"{job_success[1]}|{job_success[2]}"']
    assert all(r["equal"] == ["severity", "backend"] for r in got)
    # one SLO per SLI, or SLOs grouped differently: nothing overlaps, nothing is muted
    apart = {"apiVersion": "qobs/v1", "defaults": {"window": "30d"}, "slos": [
        {"name": "a", "sli": "job_success", "objective": 0.99},
        {"name": "b", "sli": "job_success", "objective": 0.95, "group_by": ["backend", "operation"]},
        {"name": "c", "sli": "submission_errors", "objective": 0.99}]}
    assert rules.inhibitions(spec.parse(apart))["inhibit_rules"] == []
    (tmp_path / "apart.yaml").write_text(yaml.safe_dump(apart))
    assert rules.INHIBIT_FILE not in render(str(tmp_path / "apart.yaml"))  # no empty file either


def test_amtool_accepts_the_inhibit_rules(tmp_path, amtool):
    assert rules.INHIBIT_FILE in render(None)
    r = subprocess.run([amtool, "check-config", str(_config(tmp_path))], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 inhibit rules" in r.stdout


def test_a_real_alertmanager_pages_once_per_failing_backend(tmp_path, alertmanager_bin):
    port = free_port()
    am = subprocess.Popen([alertmanager_bin, f"--config.file={_config(tmp_path)}",
                           f"--storage.path={tmp_path / 'am'}", f"--web.listen-address=127.0.0.1:{port}",
                           "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/-/ready")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        posted = [
            # one failing hardware backend burns all three job-success budgets at the page tier
            {**_labels("job-success-pipeline", "page_1h"), "backend": "ibm_torino"},
            {**_labels("job-success-critical", "page_1h"), "backend": "ibm_torino"},
            {**_labels("job-success-non-critical", "page_1h"), "backend": "ibm_torino"},
            # another backend where only the critical tier burns: it still pages
            {**_labels("job-success-critical", "page_1h"), "backend": "ibm_kyiv"},
            # a ticket is not muted by a page
            {**_labels("job-success-non-critical", "ticket_1d"), "backend": "ibm_torino"},
        ]
        body = json.dumps([{"labels": lb, "startsAt": now} for lb in posted]).encode()
        req = urllib.request.Request(f"{base}/api/v2/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

        def states() -> dict[tuple[str, str, str], str]:
            with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=10) as resp:
                alerts = json.load(resp)
            return {(a["labels"]["slo"], a["labels"]["backend"], a["labels"]["severity"]): a["status"]["state"]
                    for a in alerts}

        expected = {
            ("job-success-pipeline", "ibm_torino", "page"): "active",
            ("job-success-critical", "ibm_torino", "page"): "suppressed",
            ("job-success-non-critical", "ibm_torino", "page"): "suppressed",
            ("job-success-critical", "ibm_kyiv", "page"): "active",
            ("job-success-non-critical", "ibm_torino", "ticket"): "active",
        }
        deadline = time.monotonic() + 30  # the inhibitor picks source alerts up asynchronously
        got = states()
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            got = states()
        assert got == expected
    finally:
        am.terminate()
        try:
            am.wait(timeout=10)
        except subprocess.TimeoutExpired:
            am.kill()
        if am.returncode not in (0, -15, None):
            pytest.fail(am.stderr.read() if am.stderr else "alertmanager failed")
