"""The qobs command: one-line errors with non-zero exits, `qobs run` pass-through, fast start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

QOBS = [sys.executable, "-m", "qobs.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QOBS_", "OTEL_"))}
    env.update(extra)
    return env


def qobs(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QOBS, *args], capture_output=True, text=True, env=_env(**env), cwd=cwd, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and len(err.splitlines()) == 1, proc.stderr
    assert err.startswith("qobs: error:"), err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("OTEL_METRICS_EXPORTER", "prometheus,statsd", "statsd"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
    ("QOBS_ENABLED", "maybe", "QOBS_ENABLED"),
    ("QOBS_FLUSH_INTERVAL", "5", "between"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "http", "integer"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "http://"),
])
def test_bad_environment_is_one_line_and_exit_2(var: str, value: str, needle: str, tmp_path: Path) -> None:
    proc = qobs("run", "--", sys.executable, "-c", "print('never')", **{var: value,
                                                                         "QOBS_STORE": str(tmp_path / "r.db")})
    _one_line_error(proc, needle)
    assert proc.returncode == 2 and "never" not in proc.stdout


def test_unwritable_store_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    proc = qobs("run", "--store", str(blocker / "runs.db"), "--", sys.executable, "-c", "print('x')")
    _one_line_error(proc, "cannot open run store")


def test_corrupt_store_file(tmp_path: Path) -> None:
    bad = tmp_path / "runs.db"
    bad.write_bytes(b"\x00garbage" * 512)
    for args in (["runs", "list", "--store", str(bad)], ["runs", "show", "--store", str(bad)]):
        _one_line_error(qobs(*args), "corrupt")
    assert bad.read_bytes() == b"\x00garbage" * 512  # never overwritten: recorded data is not lost


def test_missing_store_and_unknown_run(tmp_path: Path) -> None:
    _one_line_error(qobs("runs", "show", "--store", str(tmp_path / "none.db")), "no run store")
    store = tmp_path / "r.db"
    assert qobs("run", "--store", str(store), "--", sys.executable, "-c", "pass").returncode == 0
    _one_line_error(qobs("runs", "show", "nope", "--store", str(store)), "no run 'nope'")


def test_store_off_writes_no_file(tmp_path: Path) -> None:
    """`--store off` (and QOBS_STORE=off) turn the store off; they never create a file named 'off'."""
    for args, env in ((["run", "--store", "off"], {}), (["run"], {"QOBS_STORE": "off"})):
        proc = qobs(*args, "--", sys.executable, "-c", "import qobs; qobs.instrument(); print('ran')", cwd=tmp_path,
                    **env)
        assert proc.returncode == 0 and proc.stdout.strip() == "ran", proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    _one_line_error(qobs("runs", "list", "--store", "off", cwd=tmp_path), "store is off")


def test_command_not_found(tmp_path: Path) -> None:
    _one_line_error(qobs("run", "--store", str(tmp_path / "r.db"), "--", "no-such-program-xyz"), "not found")


USER_PROGRAM = textwrap.dedent("""
    import sys
    print("out:" + " ".join(sys.argv[1:]))
    print("err line", file=sys.stderr)
    data = sys.stdin.read()
    print("in:" + data.strip())
    if "--boom" in sys.argv:
        raise ValueError("user's own error")
    sys.exit(int(sys.argv[1]))
""")


def test_run_passes_exit_code_stdio_and_user_exceptions_through(tmp_path: Path) -> None:
    script = tmp_path / "prog.py"
    script.write_text(USER_PROGRAM)
    store = tmp_path / "r.db"
    env = _env(QOBS_STORE=str(store))
    proc = subprocess.run([*QOBS, "run", "--", sys.executable, str(script), "3", "--token", "s3cret"],
                          input="hello", capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 3
    assert proc.stdout.splitlines() == ["out:3 --token s3cret", "in:hello"]
    assert proc.stderr.splitlines()[-1] == "err line" and "Traceback" not in proc.stderr
    plain = subprocess.run([sys.executable, str(script), "0", "--boom"], input="", capture_output=True, text=True)
    boom = subprocess.run([*QOBS, "run", "--", sys.executable, str(script), "0", "--boom"], input="",
                          capture_output=True, text=True, env=env, timeout=300)
    assert boom.returncode == plain.returncode == 1
    assert boom.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1] == "ValueError: user's own error"
    runs = json.loads(qobs("runs", "list", "--json", "--store", str(store)).stdout)
    assert [r["exit_code"] for r in runs] == [1, 3]
    assert [r["status"] for r in runs] == ["failed", "failed"]
    argv = runs[1]["argv"]
    assert "s3cret" not in json.dumps(runs) and argv[-1] == "[REDACTED]"


def test_run_show_json_reports_provenance(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    qobs("run", "--store", str(store), "--name", "nightly", "--", sys.executable, "-c", "pass")
    shown = json.loads(qobs("runs", "show", "latest", "--json", "--store", str(store)).stdout)
    run = shown["run"]
    assert run["name"] == "nightly" and run["status"] == "finished" and run["exit_code"] == 0
    assert run["qobs_version"] and run["python"] and run["qiskit"] and run["pennylane"] and run["host"]
    assert shown["totals"]["jobs"] == 0


def test_help_imports_no_sdk() -> None:
    code = ("import sys; from click.testing import CliRunner; from qobs.cli import main;"
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output;"
            "heavy = [m for m in ('qiskit', 'qiskit_aer', 'pennylane', 'opentelemetry.sdk', 'numpy', 'scipy')"
            " if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_contract_docs_are_current() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = qobs("contract", "--check", cwd=root)
    assert proc.returncode == 0, proc.stderr


def test_run_restores_a_signal_handler_python_did_not_install(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An interpreter embedded in a host that installed its own C handler gets ``None`` back from
    ``signal.signal`` for it; `qobs run` must not raise restoring that (it restores the default).
    Stand-in: no Python program can install a C handler that Python then reports as None (the table is
    read once at start-up), so ``signal.signal`` answers None for the first install, as it would there."""
    import signal

    from click.testing import CliRunner

    from qobs import cli

    real = signal.signal
    seen: dict[int, object] = {}

    def host(sig: int, handler: object) -> object:
        prev = real(sig, handler)
        if sig == signal.SIGHUP and sig not in seen:
            seen[sig] = prev
            return None
        return prev

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(signal, "signal", host)
    try:
        out = CliRunner().invoke(cli.main, ["run", "--store", str(tmp_path / "r.db"), "--", sys.executable, "-c",
                                            "pass"])
    finally:
        real(signal.SIGHUP, signal.SIG_DFL)
    assert out.exit_code == 0, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    assert {s: signal.getsignal(s) for s in before} == before  # the others are given back unchanged
