"""The committed dashboards type-check against Grafana's own dashboard schema (npm ``@grafana/schema``).

``tsc --noEmit`` checks ``const d: Json<Dashboard> = <dashboard JSON>``: unknown keys (excess
properties), wrong types and missing required fields are errors. ``Json<T>`` only lets a JSON string
stand for a TypeScript string enum (JSON has no enums). The packages live in
``$QOBS_GRAFANA_SCHEMA_DIR`` (default ``~/.cache/qobs/grafana-schema``), installed with::

    npm install --prefix ~/.cache/qobs/grafana-schema --no-audit --no-fund @grafana/schema@13.2.3 typescript@7.0.2

Missing packages skip the test, or fail it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

COMMITTED = Path(__file__).resolve().parents[2] / "dashboards"
PRELUDE = """import type { Dashboard } from '@grafana/schema';
type Json<T> = T extends string ? `${T}` : T extends (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> } : T;
const d: Json<Dashboard> = """
TSCONFIG = {"compilerOptions": {"strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler",
                                "target": "es2022", "skipLibCheck": True, "types": []}}


@pytest.fixture(scope="module")
def schema_dir() -> Path:
    root = Path(os.environ.get("QOBS_GRAFANA_SCHEMA_DIR", Path.home() / ".cache/qobs/grafana-schema"))
    modules = root / "node_modules"
    if not ((modules / "@grafana/schema/package.json").exists() and (modules / ".bin/tsc").exists()):
        msg = f"@grafana/schema and typescript not installed in {root} (see this module's docstring)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def _tsc(schema_dir: Path, work: Path, sources: dict[str, str]) -> subprocess.CompletedProcess[str]:
    work.mkdir()
    (work / "node_modules").symlink_to(schema_dir / "node_modules")
    for name, text in sources.items():
        (work / name).write_text(text, encoding="utf-8")
    (work / "tsconfig.json").write_text(json.dumps({**TSCONFIG, "files": sorted(sources)}))
    return subprocess.run([str(schema_dir / "node_modules/.bin/tsc"), "-p", "tsconfig.json"], cwd=work,
                          capture_output=True, text=True, check=False)


def _source(model: dict) -> str:
    return PRELUDE + json.dumps(model, indent=1) + ";\nexport default d;\n"


@pytest.mark.real_tools
def test_dashboards_typecheck_against_grafana_schema(schema_dir: Path, tmp_path: Path) -> None:
    sources = {f"{p.stem}.ts": _source(json.loads(p.read_text(encoding="utf-8")))
               for p in sorted(COMMITTED.glob("*.json"))}
    assert len(sources) == 3
    done = _tsc(schema_dir, tmp_path / "ok", sources)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.real_tools
def test_schema_check_rejects_a_broken_dashboard(schema_dir: Path, tmp_path: Path) -> None:
    model = json.loads((COMMITTED / "qobs-oncall.json").read_text(encoding="utf-8"))
    model["panels"][1]["gridPos"]["depth"] = 3       # unknown key
    model["templating"]["list"][0].pop("name")       # missing required field
    done = _tsc(schema_dir, tmp_path / "bad", {"bad.ts": _source(model)})
    assert done.returncode != 0
    assert "'\"depth\"' does not exist" in done.stdout and "name" in done.stdout, done.stdout
