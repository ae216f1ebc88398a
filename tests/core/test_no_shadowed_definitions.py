"""No module of qobs or its adapters defines the same top-level name twice: a later ``def`` silently replaces
an earlier one that is still called (stop 15 shipped two ``_settle`` functions in the Qiskit hooks; every job
without a future then failed in qobs). ruff's F811 misses it when the first one is used inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _defined_twice(path: Path) -> list[str]:
    seen: dict[str, int] = {}
    twice = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in seen:
                twice.append(f"{path}:{node.lineno} {node.name} (first at line {seen[node.name]})")
            seen.setdefault(node.name, node.lineno)
    return twice


def test_no_top_level_function_or_class_is_defined_twice() -> None:
    files = sorted([*ROOT.joinpath("qobs").rglob("*.py"), *ROOT.joinpath("adapters").rglob("*.py"),
                    *ROOT.joinpath("reference_qgan").rglob("*.py")])
    assert len(files) > 20
    assert [d for f in files for d in _defined_twice(f)] == []


def test_the_check_sees_a_second_definition(tmp_path: Path) -> None:
    src = tmp_path / "shadow.py"
    src.write_text("def f(x):\n    return g(x)\n\n\ndef g(x):\n    return x\n\n\ndef g():\n    return 0\n")
    assert _defined_twice(src) == [f"{src}:9 g (first at line 5)"]
