"""The committed dashboards: no drift from the generator, contract-only series, a sane Grafana model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from qobs import contract
from qobs.cli import main
from qobs.dashboards import build, expressions, render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "dashboards"
REGENERATE = "qobs dashboards build -o dashboards/"
UIDS = ("qobs-debug", "qobs-executive", "qobs-oncall")
# Range windows allowed in panel expressions: Grafana's own, or the fixed windows an SLO is written on.
WINDOWS = {"$__rate_interval", "$__range", "1h", "6h", "1d", "30d"}


def _committed() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(COMMITTED.glob("*.json"))}


def test_committed_dashboards_match_the_generator(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["dashboards", "build", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fresh = sorted(p.name for p in tmp_path.glob("*.json"))
    assert fresh == sorted(p.name for p in COMMITTED.glob("*.json")) == [f"{u}.json" for u in UIDS], (
        f"dashboards/ holds other files than the generator writes; run `{REGENERATE}`")
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), (
            f"dashboards/{name} is out of date with the contract/generator; run `{REGENERATE}` and commit it")


def test_generator_is_deterministic() -> None:
    first = {uid: render(m) for uid, m in build().items()}
    assert first == {uid: render(m) for uid, m in build().items()}


def test_every_series_in_every_expression_is_in_the_contract() -> None:
    seen: set[str] = set()
    for model in _committed().values():
        for where, expr in expressions(model):
            for ident in re.findall(r"qobs_[a-z0-9_]+", expr):
                base = ident
                if contract.METRICS_BY_NAME.get(base) is None:
                    base = re.sub(r"_(bucket|sum|count)$", "", ident)
                    m = contract.METRICS_BY_NAME.get(base)
                    assert m is not None and m.kind == "histogram", f"{where}: {ident} is not in the contract"
                seen.add(base)
    # the dashboards cover nearly the whole contract; the gap is named so it stays a decision
    assert set(contract.METRICS_BY_NAME) - seen == set(), sorted(set(contract.METRICS_BY_NAME) - seen)


@pytest.mark.parametrize("uid", UIDS)
def test_grafana_model_is_well_formed(uid: str) -> None:
    d = _committed()[uid]
    assert d["uid"] == uid and d["schemaVersion"] == 41 and "qobs" in d["tags"] and d["id"] is None
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("backend", "model"):
        assert variables[name]["query"]["query"].startswith("label_values(qobs_"), name
        assert variables[name]["allValue"] == ".*" and variables[name]["includeAll"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] == "row":
            continue
        assert len(p["description"]) > 40, f"{p['title']}: say what it means and what to do"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
            for window in re.findall(r"\[([^\]]+)\]\)", t["expr"]):
                assert window in WINDOWS, f"{p['title']}: range [{window}]"
            if "_bucket" in t["expr"] and "histogram_quantile" not in t["expr"] and t["format"] != "heatmap":
                assert re.search(r'le=~?"', t["expr"]), f"{p['title']}: a bucket read needs an exact le"


def test_latency_thresholds_come_from_the_contract() -> None:
    oncall = {p["title"]: p for p in _committed()["qobs-oncall"]["panels"]}
    steps = [s["value"] for s in oncall["Job duration p50 / p95"]["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps[1:] == [contract.SLO_THRESHOLDS["sample_latency_simulator"][1],
                         contract.SLO_THRESHOLDS["sample_latency_hardware"][1]]
    exprs = [t["expr"] for t in oncall["Jobs within latency thresholds"]["targets"]]
    assert 'le="0.2"' in exprs[0] and "_count" in exprs[0]
    assert re.search(r'le=~"1\|1\[\.\]0"', exprs[1]), exprs[1]  # prometheus_client writes 1.0, OTLP paths 1


def test_contract_checks_catch_typos() -> None:
    from qobs.dashboards.promql import fraction_under, series

    with pytest.raises(KeyError):
        series("qobs_job_total")
    with pytest.raises(ValueError, match="no label"):
        series("qobs_jobs_total", 'model="x"')
    with pytest.raises(ValueError, match="not one of"):
        series("qobs_jobs_total", 'status="failed"')
    with pytest.raises(ValueError, match="not a bucket bound"):
        fraction_under("qobs_job_duration_seconds", 0.3)
