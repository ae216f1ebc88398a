"""Grafana dashboards as code, generated from the SLI contract.

``qobs dashboards build -o dashboards/`` writes ``qobs-executive.json``, ``qobs-oncall.json`` and
``qobs-debug.json`` (Grafana JSON model, schemaVersion 41). Output is deterministic: sorted keys,
panel ids derived from titles, so the committed files can be checked for drift byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["build", "expressions", "render", "write"]


def build() -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON model, by file stem (its uid)."""
    from qobs.dashboards.boards import BOARDS

    return {uid: make().model() for uid, make in BOARDS.items()}


def render(model: dict[str, Any]) -> str:
    """The exact bytes committed under ``dashboards/``."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(outdir: str | Path) -> list[Path]:
    """Write every dashboard to ``outdir/<uid>.json``; returns the paths written."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for uid, model in build().items():
        path = out / f"{uid}.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths


def expressions(model: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and query variable of a dashboard model."""
    out: list[tuple[str, str]] = []
    for p in model["panels"]:
        for t in p.get("targets", []):
            out.append((f"{model['uid']} / {p['title']} / {t['refId']}", t["expr"]))
    for v in model["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"{model['uid']} / ${v['name']}", v["query"]["query"]))
    return out
