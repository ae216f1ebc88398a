"""Checkpoints: JSON files holding the parameters with their encoding contract and provenance.

A checkpoint is only meaningful with the encoding it was trained under (qubits, bins, bounds, the
bitstring-to-value mapping, the ansatz). Loading one under a different configuration is refused
with a one-line ``ConfigError`` instead of silently sampling a different distribution.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from qobs.errors import ConfigError
from reference_qgan import ansatz as ans

FORMAT = "qobs-qgan-checkpoint/1"
CONTRACT_KEYS = ("qubits", "bins", "bounds", "mapping", "ansatz", "reps", "num_params", "target")


def encoding(a: ans.Ansatz, target: str) -> dict[str, Any]:
    """The encoding contract of a generator: what a measured bitstring means."""
    bins = 2**a.qubits
    return {"qubits": a.qubits, "bins": bins, "bounds": [0, bins - 1], "mapping": ans.MAPPING,
            "ansatz": a.name, "reps": a.reps, "num_params": a.num_params, "target": target}


def versions() -> dict[str, str | None]:
    from qobs import __version__
    from qobs._versions import sdk_version

    return {"qobs": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "qiskit": sdk_version("qiskit"), "qiskit-aer": sdk_version("qiskit-aer"),
            "pennylane": sdk_version("pennylane")}


def save(path: str | Path, *, params: np.ndarray, enc: dict[str, Any], step: int, seed: int,
         metrics: dict[str, float], config: dict[str, Any], discriminator: dict[str, Any] | None = None,
         run_id: str | None = None, kind: str = "last") -> Path:
    """Write a checkpoint atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "kind": kind, "step": step, "params": [float(x) for x in params],
           "encoding": enc, "metrics": metrics,
           "provenance": {"seed": seed, "created": time.time(), "run_id": run_id, "versions": versions(),
                          "config": config},
           "discriminator": discriminator}
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def load(path: str | Path, expected: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint; with ``expected`` (an encoding), refuse one trained under another contract."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"checkpoint not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a qobs QGAN checkpoint (format {FORMAT})")
    enc = doc.get("encoding") or {}
    if len(doc.get("params", [])) != enc.get("num_params"):
        raise ConfigError(f"checkpoint {path} is corrupt: {len(doc.get('params', []))} parameters, "
                          f"encoding says {enc.get('num_params')}")
    if expected is not None:
        diff = [k for k in CONTRACT_KEYS if k in expected and enc.get(k) != expected[k]]
        if diff:
            parts = ", ".join(f"{k}={enc.get(k)!r} (expected {expected[k]!r})" for k in diff)
            raise ConfigError(f"checkpoint {path} has a different encoding contract: {parts}")
    return doc


def ansatz_of(doc: dict[str, Any]) -> ans.Ansatz:
    enc = doc["encoding"]
    return ans.make(enc["ansatz"], enc["qubits"], enc["reps"])
