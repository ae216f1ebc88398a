"""``qobs demo`` as a person runs it: a subprocess, a summary, a store; Ctrl-C leaves a readable run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

QOBS = [sys.executable, "-m", "qobs.cli"]


def _env() -> dict[str, str]:
    env = clean_env()
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_demo_tiny_profile_on_aer(tmp_path: Path):
    store = tmp_path / "runs.db"
    out = subprocess.run([*QOBS, "demo", "--profile", "tiny", "--backend", "aer", "--store", str(store)],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for needle in ("quality", "KL", "KS", "target", "jobs", "shots", "cost", "job time", "queue", "fidelity",
                   str(store)):
        assert needle in text, needle
    shown = subprocess.run([*QOBS, "runs", "show", "latest", "--store", str(store)], env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "training: 20 steps" in shown.stdout and "finished" in shown.stdout
    # the postmortem's best KL is the demo's: same measure (exact), same step (numbered from 1)
    best = re.search(r"best +KL (\d\.\d{4}) .*\(step (\d+)\)", text)
    report = subprocess.run([*QOBS, "report", "--json", "--store", str(store)], env=_env(), capture_output=True,
                            text=True, timeout=120)
    assert best is not None and report.returncode == 0, report.stderr
    t = json.loads(report.stdout)["training"]
    assert (t["kl_kind"], f"{t['best_kl']:.4f}", t["best_step"]) == ("exact", best[1], int(best[2]))
    ckpt = next((tmp_path / "checkpoints").glob("*/best.json"))
    sample = subprocess.run([*QOBS, "qgan", "sample", "--checkpoint", str(ckpt), "-n", "100"], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert sample.returncode == 0 and "100 samples" in sample.stdout


@pytest.mark.slow
def test_ctrl_c_leaves_a_readable_store_and_checkpoint(tmp_path: Path):
    store = tmp_path / "runs.db"
    # Ctrl-C as a person's terminal delivers it: a suite started in the background (``cmd &``) hands its
    # children SIGINT ignored, which Python keeps, and the demo would never see the signal.
    proc = subprocess.Popen([*QOBS, "demo", "--profile", "full", "--backend", "aer", "--store", str(store)],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # wait for step 300 (checkpoints written), however slow the machine is
        lines.append(line)
        if line.startswith("step") and int(line.split()[1].split("/")[0]) >= 300:
            break
    assert proc.poll() is None, "".join(lines)  # still training: the interrupt lands mid-run
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "interrupted" in output
    shown = subprocess.run([*QOBS, "runs", "show", "latest", "--store", str(store)], env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "interrupted" in shown.stdout and "training:" in shown.stdout
    ckpts = list((tmp_path / "checkpoints").glob("*/*.json"))
    assert {p.name for p in ckpts} >= {"best.json", "last.json"}
    from reference_qgan import checkpoint

    doc = checkpoint.load(next(p for p in ckpts if p.name == "last.json"))
    assert doc["step"] >= 300
