"""An older PennyLane than the one installed: the adapter's tests again, under another interpreter.

Set ``QOBS_PENNYLANE_COMPAT_PYTHON`` to a Python whose environment has the oldest PennyLane we
claim (``SUPPORTED[0]``, 0.40), qobs (``pip install --no-deps -e .``) and the core dependencies.
Measured here: a venv with ``pennylane==0.40.* pennylane-lightning==0.40.* 'autoray<0.7.1'`` plus
opentelemetry-sdk, prometheus-client, click, pyyaml and pytest installs in 40-46 s (0.41: 37 s);
autoray 0.7.1+ breaks ``import pennylane`` for 0.40 and 0.41. `./dev test` sets one up (.venv-compat-pennylane).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import clean_env, compat_python

ENV = "QOBS_PENNYLANE_COMPAT_PYTHON"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_adapter_suite_under_the_oldest_supported_pennylane() -> None:
    python = compat_python(ENV)
    version = subprocess.run([python, "-c", "import pennylane; print(pennylane.__version__)"],
                             capture_output=True, text=True, timeout=120)
    assert version.returncode == 0, version.stderr
    from qobs_pennylane import SUPPORTED

    minor = tuple(int(p) for p in version.stdout.strip().split(".")[:2])
    oldest, newest = (tuple(int(p) for p in v.split(".")) for v in SUPPORTED)
    assert oldest <= minor <= newest, (version.stdout, SUPPORTED)  # a version we claim
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/adapters/test_pennylane_adapter.py", "tests/adapters/test_pennylane_e2e.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout
