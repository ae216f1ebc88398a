"""Fixtures shared by every test: an isolated run, metric reads, and the real Prometheus tools.

Real tools (promtool, prometheus) are required under CI (``CI=true``): there a missing tool fails
the test instead of skipping it, so a green CI always means the real part ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


# Script lines for a subprocess test: a transpiled Bell circuit ``qc`` and a seeded ``sim`` (AerSimulator).
AER_BELL = """
from qiskit import QuantumCircuit, transpile
from qiskit_aer import AerSimulator
qc = QuantumCircuit(2)
qc.h(0)
qc.cx(0, 1)
qc.measure_all()
sim = AerSimulator(seed_simulator=1)
qc = transpile(qc, sim)
"""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without qobs's and OpenTelemetry's settings, one OpenMP thread, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QOBS_", "OTEL_"))}
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_python(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in ``clean_env(**env)``, output captured as text."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=clean_env(**env),
                          timeout=timeout)


def _missing(what: str, how: str) -> None:
    """Fail under CI (a green CI means the real part ran), skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI ({how})")
    pytest.skip(f"{what} is not available ({how})")


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        _missing(tool, "./dev test installs Debian's prometheus, pushgateway and alertmanager")
    return path  # type: ignore[return-value]


def compat_python(var: str) -> str:
    """The interpreter named by ``var``, with an older supported SDK (``./dev test`` sets one up)."""
    python = os.environ.get(var, "")
    if not python:
        _missing(var, "./dev test sets up the older-SDK interpreter and exports it")
    return python


@pytest.fixture(scope="session")
def promtool() -> str:
    return _require("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return _require("prometheus")


@pytest.fixture(scope="session")
def pushgateway_bin() -> str:
    return _require("prometheus-pushgateway")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    return _require("prometheus-alertmanager")


@pytest.fixture(scope="session")
def amtool() -> str:
    return _require("amtool")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200 (bounded)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up in {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def qobs_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """qobs instrumented into a fresh store at ``tmp_path/runs.db``; uninstrumented afterwards."""
    import qobs
    from qobs import runtime

    for var in [v for v in os.environ if v.startswith(("QOBS_", "OTEL_"))]:
        monkeypatch.delenv(var)
    qobs.uninstrument()
    runtime._settings_override.clear()
    store = tmp_path / "runs.db"
    qobs.configure(store=str(store), flush_interval=0.05)
    qobs.instrument()
    try:
        yield store
    finally:
        qobs.uninstrument()
        runtime._settings_override.clear()


@pytest.fixture
def metric() -> Callable[..., float]:
    """Read a sample from the default registry (0.0 when absent): ``metric("qobs_jobs_total", backend=...)``."""
    from prometheus_client import REGISTRY

    def read(name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, labels)
        return 0.0 if value is None else value

    return read
