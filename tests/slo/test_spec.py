"""SLO file validation (one-line errors naming the field, exit 2), exact factors, OpenSLO import."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from click.testing import CliRunner

from qobs.cli import main
from qobs.errors import ConfigError
from qobs.slo import rules, spec

GOOD = """
apiVersion: qobs/v1
slos:
  - name: jobs
    sli: job_success
    objective: 0.999
    window: 28d
"""


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "slo.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize(("body", "field", "words"), [
    ("    sli: job_success\n    window: 30d\n", "slos[0].objective", "missing"),
    ("    sli: job_success\n    objective: 1.5\n    window: 30d\n", "slos[0].objective", "outside (0, 1)"),
    ("    sli: job_success\n    objective: 0\n    window: 30d\n", "slos[0].objective", "outside (0, 1)"),
    ("    sli: job_sucess\n    objective: 0.99\n    window: 30d\n", "slos[0].sli", "unknown SLI 'job_sucess'"),
    ("    sli: job_success\n    objective: 0.99\n    window: 30 days\n", "slos[0].window", "bad window"),
    ("    sli: job_success\n    objective: 0.99\n    window: 0d\n", "slos[0].window", "bad window"),
    ("    sli: job_success\n    objective: 0.99\n    window: 30d\n    group_by: [model]\n", "slos[0].group_by",
     "'model' is not on the SLI's series"),
    ("    sli: sample_latency_simulator\n    objective: 0.99\n    window: 30d\n    threshold_seconds: 0.3\n",
     "slos[0].threshold_seconds", "not a bucket bound"),
    ("    sli: job_success\n    objective: 0.99\n    window: 30d\n    burn_rates: {page_9h: false}\n",
     "slos[0].burn_rates.page_9h", "no such tier"),
    ("    sli: job_success\n    objective: 0.99\n    window: 10m\n", "slos[0].burn_rates.page_1h.long_window",
     "longer than the SLO window"),
])
def test_bad_slo_file_is_one_line_naming_the_field_exit_2(tmp_path, body, field, words):
    path = _write(tmp_path, "slos:\n  - name: x\n" + body)
    with pytest.raises(ConfigError) as exc:
        spec.load(path)
    assert str(exc.value).startswith(field + ":") and words in str(exc.value)
    res = CliRunner().invoke(main, ["alerts", "build", "--slo", path, "-o", str(tmp_path / "out")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"qobs: error: {field}:"), res.output
    assert not (tmp_path / "out").exists()


def test_missing_objective_hints_the_tier_default(tmp_path):
    path = _write(tmp_path, "slos:\n  - {name: x, sli: job_success, tier: critical, window: 30d}\n")
    with pytest.raises(ConfigError, match=r"^slos\[0\]\.objective: missing .*critical tier's default is 0\.98"):
        spec.load(path)


def test_factors_follow_the_window_and_print_exactly(tmp_path):
    s = spec.load(_write(tmp_path, GOOD))
    (slo,) = s.slos
    # 28d: the same budget shares as the workbook's 30d tiers (2% in 1h, 5% in 6h, 10% in 1d and 3d).
    assert [t.factor for t in slo.tiers] == [Fraction("13.44"), Fraction("5.6"), Fraction("2.8"), Fraction(14, 15)]
    assert slo.objective == Decimal("0.999") and slo.budget == Fraction(1, 1000)
    text = rules.build(s)["slo-jobs.rules.yml"]
    assert "vector(0.999)" in text and ">= 0.01344" in text and ">= (7 / 7500)" in text
    assert "0000000" not in text and "9999999" not in text  # no float noise anywhere
    thirty = spec.parse({"slos": [{"name": "a", "sli": "job_success", "objective": 0.99, "window": "30d"}]})
    assert [t.factor for t in thirty.slos[0].tiers] == [Fraction("14.4"), 6, 3, 1]
    seven = spec.parse({"slos": [{"name": "a", "sli": "job_success", "objective": 0.99, "window": "7d"}]})
    assert [t.factor for t in seven.slos[0].tiers] == [Fraction("3.36"), Fraction("1.4"), Fraction("0.7"),
                                                       Fraction(7, 30)]


def test_tiers_can_be_switched_off_and_game_day_windows_added():
    s = spec.parse({"slos": [{"name": "g", "sli": "job_success", "objective": 0.9, "window": "10m",
                              "default_burn_rates": False,
                              "burn_rates": {"fast": {"severity": "page", "long_window": "30s",
                                                      "short_window": "10s", "factor": 2}}},
                             {"name": "h", "sli": "job_success", "objective": 0.99, "window": "30d",
                              "burn_rates": {"page_6h": False}}]})
    assert [t.name for t in s.slos[0].tiers] == ["fast"]
    assert [t.name for t in s.slos[1].tiers] == ["page_1h", "ticket_1d", "ticket_3d"]
    text = rules.build(s)["slo-h.rules.yml"]
    assert "burnrate_tier: page_6h" not in text and "burnrate_tier: page_1h" in text


def test_factor_that_can_never_fire_is_refused():
    with pytest.raises(ConfigError, match=r"^slos\[0\]\.burn_rates\.page_1h\.factor: .*could never fire"):
        spec.parse({"slos": [{"name": "a", "sli": "job_success", "objective": 0.9, "window": "30d"}]})


def test_openslo_ratio_metric_import(tmp_path):
    path = _write(tmp_path, """
apiVersion: openslo/v1
kind: SLO
metadata: {name: sampler-success}
spec:
  budgetingMethod: Occurrences
  timeWindow: [{duration: 28d, isRolling: true}]
  indicator:
    metadata: {name: ok-jobs}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Prometheus, spec: {query: 'qobs_jobs_total{status="ok"}'}}}
        total: {metricSource: {type: Prometheus, spec: {query: 'qobs_jobs_total{status=~"ok|error"}'}}}
  objectives: [{displayName: good, target: 0.98}]
""")
    s = spec.load(path)
    (slo,) = s.slos
    assert slo.sli.name == "ratio" and slo.objective == Decimal("0.98") and slo.window_s == 28 * 86400
    expr = rules.error_ratio_expr(slo, 3600)
    assert 'increase(qobs_jobs_total{status="ok"}[1h])' in expr and 'status=~"ok|error"' in expr
    bad = path.replace("slo.yaml", "bad.yaml")
    Path(bad).write_text(Path(path).read_text().replace("qobs_jobs_total{status=\"ok\"}", "http_requests_total"))
    with pytest.raises(ConfigError, match=r"^slos\[0\]\.ratio\.good: .*not a plain selector"):
        spec.load(bad)


def test_durations():
    assert spec.parse_duration("1h30m", "w") == 5400 and spec.fmt_duration(5400) == "90m"
    assert spec.fmt_duration(3 * 86400) == "3d" and spec.fmt_number(Fraction(7, 150)) == "(7 / 150)"
    assert spec.fmt_number(Decimal("0.9990")) == "0.999" and spec.fmt_number(Fraction(144, 10)) == "14.4"


def test_a_renamed_slo_leaves_no_rule_file_behind(tmp_path):
    """Renaming an SLO used to leave its old rule file (and tests, runbooks) in the output directory, where
    Prometheus kept loading it: every alert twice. build removes what it wrote before and no longer
    writes; check reports it; a hand-written file there is not touched."""
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["alerts", "build", "--slo", _write(tmp_path, GOOD), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "slo-jobs.rules.yml").exists() and (out / "tests" / "slo-jobs.test.yml").exists()
    keep = {  # the user's own files, beside ours: none of them is build's to remove
        "team.rules.yml": "groups: []\n",
        "README.md": "The rule files here are generated by `qobs alerts build`.\n",
        "backup/slo-jobs.rules.yml": (out / "slo-jobs.rules.yml").read_text(),  # a copy elsewhere
        "alertmanager.yml": "# Generated by `qobs alerts build` (pasted)\n",
    }
    other = tmp_path / "team-b" / "slo.yaml"  # another SLO file, of the same name, built into the same directory
    other.parent.mkdir()
    other.write_text(GOOD.replace("name: jobs", "name: other-jobs"))
    assert CliRunner().invoke(main, ["alerts", "build", "--slo", str(other), "-o", str(out)]).exit_code == 0
    for rel, text in keep.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    renamed = _write(tmp_path, GOOD.replace("name: jobs", "name: job-success"))
    res = CliRunner().invoke(main, ["alerts", "check", "--slo", renamed, "-d", str(out)])
    assert res.exit_code == 1 and "slo-jobs.rules.yml" in res.output
    res = CliRunner().invoke(main, ["alerts", "build", "--slo", renamed, "-o", str(out)])
    assert res.exit_code == 0 and "removed 2" in res.output, res.output
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*.yml"))
    assert "slo-jobs.rules.yml" not in left and "tests/slo-jobs.test.yml" not in left
    assert {"slo-job-success.rules.yml", "tests/slo-job-success.test.yml", "slo-other-jobs.rules.yml",
            "tests/slo-other-jobs.test.yml"} <= set(left)
    for rel, text in keep.items():
        assert (out / rel).read_text() == text, rel
    res = CliRunner().invoke(main, ["alerts", "check", "--slo", renamed, "-d", str(out)])
    assert res.exit_code == 0, res.output
