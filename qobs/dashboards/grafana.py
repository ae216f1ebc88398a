"""A small, deterministic builder for Grafana's dashboard JSON model (schemaVersion 41).

Panels are placed left to right on Grafana's 24-column grid; panel ids are derived from the
dashboard uid and the panel title, so adding a panel never renumbers the others (links such as
``?viewPanel=<id>`` keep working).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 41
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24


@dataclass(frozen=True)
class Target:
    """One PromQL query of a panel."""

    expr: str
    legend: str = "__auto"
    instant: bool = False
    fmt: str = "time_series"  # time_series, table or heatmap


def thresholds(*steps: tuple[float, str], base: str = "green") -> dict[str, Any]:
    """Absolute thresholds: ``base`` below the first step, then each ``(value, color)``."""
    return {"mode": "absolute",
            "steps": [{"color": base, "value": None}, *({"color": c, "value": v} for v, c in steps)]}


def _targets(targets: list[Target]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(targets):
        out.append({"datasource": DATASOURCE, "editorMode": "code", "expr": t.expr, "format": t.fmt,
                    "instant": t.instant, "legendFormat": t.legend, "range": not t.instant,
                    "refId": chr(ord("A") + i)})
    return out


_REDUCE = {"calcs": ["lastNotNull"], "fields": "", "values": False}
_LEGEND = {"calcs": ["lastNotNull", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True}


def panel(kind: str, title: str, description: str, targets: list[Target], *, unit: str = "short",
          w: int = 12, h: int = 8, min: float | None = None, max: float | None = None,  # noqa: A002
          steps: dict[str, Any] | None = None, decimals: int | None = None, stack: bool = False,
          options: dict[str, Any] | None = None, transformations: list[dict[str, Any]] | None = None,
          ) -> dict[str, Any]:
    """A panel of ``kind`` (timeseries, stat, gauge, heatmap, table, bargauge). Placement comes later."""
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps or thresholds()}
    for key, value in (("min", min), ("max", max), ("decimals", decimals)):
        if value is not None:
            defaults[key] = value
    opts: dict[str, Any]
    if kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {"drawStyle": "line", "fillOpacity": 10 if stack else 0, "lineWidth": 1,
                              "showPoints": "never", "spanNulls": False,
                              "stacking": {"group": "A", "mode": "normal" if stack else "none"},
                              "thresholdsStyle": {"mode": "dashed" if steps else "off"}}
        opts = {"legend": _LEGEND, "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        defaults["color"] = {"mode": "thresholds"}
        opts = {"colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                "reduceOptions": _REDUCE, "textMode": "auto"}
    elif kind in ("gauge", "bargauge"):
        defaults["color"] = {"mode": "thresholds"}
        opts = {"orientation": "auto", "reduceOptions": _REDUCE, "showThresholdLabels": False,
                "showThresholdMarkers": True}
    elif kind == "heatmap":
        opts = {"calculate": False, "cellGap": 1,
                "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme", "reverse": False,
                          "scale": "exponential", "scheme": "Oranges", "steps": 64},
                "exemplars": {"color": "rgba(255,0,255,0.7)"}, "filterValues": {"le": 1e-09},
                "legend": {"show": True}, "rowsFrame": {"layout": "auto"},
                "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": False},
                "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit}}
    elif kind == "table":
        opts = {"cellHeight": "sm", "showHeader": True}
    else:
        raise ValueError(f"unknown panel kind {kind!r}")
    opts.update(options or {})
    p: dict[str, Any] = {"datasource": DATASOURCE, "description": description,
                         "fieldConfig": {"defaults": defaults, "overrides": []},
                         "gridPos": {"h": h, "w": w, "x": 0, "y": 0}, "options": opts,
                         "targets": _targets(targets), "title": title, "type": kind}
    if transformations:
        p["transformations"] = transformations
    return p


def _query_var(name: str, label: str, query: str) -> dict[str, Any]:
    return {"allValue": ".*", "current": {"text": ["All"], "value": ["$__all"]}, "datasource": DATASOURCE,
            "description": f"Values of `{name}` seen by Prometheus ({query}).",
            "hide": 0, "includeAll": True, "label": label, "multi": True, "name": name, "options": [],
            "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "regex": "", "skipUrlSync": False, "sort": 1, "type": "query"}


def variables(backend_query: str, model_query: str, objectives: tuple[str, ...], default: str) -> list[dict]:
    """``datasource``, ``backend``, ``model`` (label_values) and the SLO ``objective`` used by burn rates."""
    ds = {"description": "The Prometheus that scrapes qobs.", "hide": 0, "includeAll": False,
          "label": "Data source", "multi": False, "name": "datasource", "options": [], "query": "prometheus",
          "refresh": 1, "regex": "", "skipUrlSync": False, "type": "datasource"}
    objective = {"current": {"text": default, "value": default},
                 "description": "SLO objective of the job-success SLO (see the alert rules' SLO spec).",
                 "hide": 0, "includeAll": False, "label": "SLO objective", "multi": False, "name": "objective",
                 "options": [{"selected": o == default, "text": o, "value": o} for o in objectives],
                 "query": ",".join(objectives), "skipUrlSync": False, "type": "custom"}
    return [ds, _query_var("backend", "Backend", backend_query), _query_var("model", "Model", model_query),
            objective]


@dataclass
class Dashboard:
    """Collects rows and panels, lays them out, and renders the JSON model."""

    uid: str
    title: str
    description: str
    tags: tuple[str, ...]
    variables: list[dict[str, Any]]
    time_from: str = "now-6h"
    panels: list[dict[str, Any]] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _line_h: int = 0

    def _id(self, title: str) -> int:
        pid = zlib.crc32(f"{self.uid}/{title}".encode()) % 100_000 + 1
        if any(p["id"] == pid for p in self.panels):
            raise ValueError(f"{self.uid}: panel id clash for {title!r} (rename a panel)")
        return pid

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"collapsed": False, "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y},
                            "id": self._id(title), "panels": [], "title": title, "type": "row"})
        self._y += 1

    def _newline(self) -> None:
        self._y += self._line_h
        self._x, self._line_h = 0, 0

    def add(self, *panels: dict[str, Any]) -> None:
        for p in panels:
            if any(q["title"] == p["title"] for q in self.panels):
                raise ValueError(f"{self.uid}: duplicate panel title {p['title']!r}")
            pos = p["gridPos"]
            if self._x + pos["w"] > GRID_WIDTH:
                self._newline()
            pos["x"], pos["y"] = self._x, self._y
            self._x += pos["w"]
            self._line_h = max(self._line_h, pos["h"])
            p["id"] = self._id(p["title"])
            self.panels.append(p)

    def model(self) -> dict[str, Any]:
        """The dashboard JSON model (import it into Grafana or provision it from a file)."""
        return {
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [{"asDropdown": False, "icon": "external link", "includeVars": True, "keepTime": True,
                       "tags": ["qobs"], "targetBlank": False, "title": "qobs dashboards", "tooltip": "",
                       "type": "dashboards", "url": ""}],
            "panels": self.panels,
            "refresh": "1m",
            "schemaVersion": SCHEMA_VERSION,
            "tags": list(self.tags),
            "templating": {"list": self.variables},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


__all__ = ["DATASOURCE", "SCHEMA_VERSION", "Dashboard", "Target", "panel", "thresholds",
           "variables"]
