"""The generated rules in a real Prometheus server, scraping an instrumented run with injected failures.

The run is a separate Python process driving ``qobs.sim.SimulatedQPU`` (the simulated remote QPU,
``failure_rate=0.5``) through the Qiskit adapter, with its metrics served by prometheus_client's
``start_http_server`` on a free loopback port (qiskit-ibm-runtime, a dev dependency, gives the
simulated QPU its device model). The SLO is a game-day spec: a 10m window with a 30s/10s
burn-rate tier, so the page can fire within seconds; everything else is the production generator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from qobs.slo import rules, spec

GAME_DAY = {
    "runbook_url": "https://runbooks.example/qobs/{alert}",
    "slos": [{"name": "gameday-jobs", "sli": "job_success", "objective": 0.9, "window": "10m",
              "min_events": 5, "default_burn_rates": False, "absent": False,
              "burn_rates": {"gameday_page": {"severity": "page", "long_window": "30s", "short_window": "10s",
                                              "factor": 2}}}],
}

WORKLOAD = textwrap.dedent("""
    import sys, time
    port = int(sys.argv[1])
    import qobs
    from prometheus_client import start_http_server
    qobs.configure(store="off")
    qobs.instrument()
    start_http_server(port, addr="127.0.0.1")
    from qiskit import QuantumCircuit
    from qobs.sim import SimulatedQPU
    backend = SimulatedQPU("sim_manila", seed=3, failure_rate=0.5, time_scale=0.0)
    qc = QuantumCircuit(2); qc.h(0); qc.cx(0, 1); qc.measure_all()
    print("mode: qobs.sim", flush=True)

    def one(i):
        try:
            backend.run(qc, shots=32).result()
        except Exception:
            pass
    deadline = time.monotonic() + 240
    i = 0
    while time.monotonic() < deadline:
        one(i)
        i += 1
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except OSError as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.mark.real_tools
@pytest.mark.slow
def test_burn_rate_page_fires_in_a_real_prometheus(prometheus_bin, tmp_path):
    s = spec.parse(GAME_DAY, source="game day")
    for name, text in rules.build(s, "game day").items():
        (tmp_path / name).write_text(text)
    exp_port, prom_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(textwrap.dedent(f"""
        global: {{scrape_interval: 1s, evaluation_interval: 1s}}
        rule_files: ["{tmp_path}/*.rules.yml"]
        scrape_configs:
          - job_name: qobs
            static_configs: [{{targets: ["127.0.0.1:{exp_port}"]}}]
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QOBS_STORE": "off"}
    env.pop("OTEL_METRICS_EXPORTER", None)
    workload = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(exp_port)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    prom = subprocess.Popen([prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{prom_port}"
    try:
        _wait(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200, 30, "prometheus ready", prom)
        assert workload.stdout is not None
        assert workload.stdout.readline().strip() == "mode: qobs.sim"  # real jobs through the Qiskit adapter
        groups = _get(f"{base}/api/v1/rules")["data"]["groups"]
        assert {g["name"] for g in groups} == {"slo-gameday-jobs", "qobs-health"}

        def firing():
            alerts = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"].get("alertname") == "QobsJobSuccessBudgetBurn"
                    and a["state"] == "firing"]

        alerts = _wait(firing, 150, "QobsJobSuccessBudgetBurn firing", workload)
        (a,) = alerts
        assert a["labels"] == {"alertname": "QobsJobSuccessBudgetBurn", "backend": "sim_manila",
                               "severity": "page", "slo": "gameday-jobs", "burnrate_tier": "gameday_page"}
        assert float(a["value"]) >= 0.2
        assert a["annotations"]["runbook_url"] == "https://runbooks.example/qobs/QobsJobSuccessBudgetBurn"
        assert "%" in a["annotations"]["description"] and "{{" not in a["annotations"]["description"]
        # Every rule evaluated without errors.
        for g in _get(f"{base}/api/v1/rules")["data"]["groups"]:
            for r in g["rules"]:
                assert r["health"] == "ok", (r["name"], r.get("lastError"))
    finally:
        for p in (workload, prom):
            p.terminate()
        for p in (workload, prom):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        out = workload.stdout.read() if workload.stdout else ""
        print(out[-2000:])
