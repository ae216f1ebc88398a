"""The qobs command: one-line errors with non-zero exits, `qobs run` pass-through, fast start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import clean_env

QOBS = [sys.executable, "-m", "qobs.cli"]


_env = clean_env


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
    monkeypatch.delattr(signal, "sigtimedwait")  # the handler path (platforms without siginfo, macOS)
    try:
        out = CliRunner().invoke(cli.main, ["run", "--store", str(tmp_path / "r.db"), "--", sys.executable, "-c",
                                            "pass"])
    finally:
        real(signal.SIGHUP, signal.SIG_DFL)
    assert out.exit_code == 0, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    assert {s: signal.getsignal(s) for s in before} == before  # the others are given back unchanged


def test_run_waits_with_the_signal_mask_and_handlers_it_found(tmp_path: Path) -> None:
    import signal

    from click.testing import CliRunner

    from qobs import cli

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)}
    out = CliRunner().invoke(cli.main, ["run", "--store", str(tmp_path / "r.db"), "--", sys.executable, "-c", "pass"])
    assert out.exit_code == 0, out.output
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask
    assert {s: signal.getsignal(s) for s in handlers} == handlers


CLEAN_UP = textwrap.dedent("""
    import sys, time
    try:
        print("ready", flush=True)  # inside the try: a Ctrl-C sent as soon as it shows must reach the finally
        while True:
            time.sleep(0.01)
    finally:
        time.sleep(0.5)  # the program's own clean-up, which a second Ctrl-C would cut short
        open(sys.argv[1], "w").write("cleaned up")
""")


def test_ctrl_c_in_a_terminal_reaches_the_program_once_and_qobs_ends_by_it(tmp_path: Path) -> None:
    """A real terminal (a pty, qobs in its foreground process group): Ctrl-C is sent by the kernel to qobs
    and the program alike. qobs does not send it again (that interrupted the program's ``finally``), and
    ends by SIGINT itself, so a shell loop around it stops. The run is recorded as interrupted."""
    import fcntl
    import pty
    import signal
    import termios
    import time

    script, done, store = tmp_path / "prog.py", tmp_path / "done.txt", tmp_path / "r.db"
    script.write_text(CLEAN_UP)
    master, slave = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([*QOBS, "run", "--store", str(store), "--", sys.executable, str(script), str(done)],
                            stdin=slave, stdout=slave, stderr=slave, env=_env(), preexec_fn=controlling_terminal)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    while b"ready" not in seen and time.monotonic() < deadline:
        seen += os.read(master, 1024)
    assert b"ready" in seen, seen
    os.write(master, b"\x03")  # Ctrl-C, as typed
    try:
        code = proc.wait(timeout=120)
    finally:
        os.close(master)
    assert done.read_text() == "cleaned up"
    assert code == -signal.SIGINT
    (run,) = json.loads(qobs("runs", "list", "--json", "--store", str(store)).stdout)
    assert (run["status"], run["exit_code"]) == ("interrupted", 130)


def test_a_signal_sent_to_qobs_alone_is_passed_on(tmp_path: Path) -> None:
    import signal

    script, done = tmp_path / "prog.py", tmp_path / "done.txt"
    script.write_text(CLEAN_UP)
    proc = subprocess.Popen([*QOBS, "run", "--store", str(tmp_path / "r.db"), "--", sys.executable, str(script),
                             str(done)], stdout=subprocess.PIPE, env=_env())
    assert proc.stdout.readline().strip() == b"ready"
    proc.send_signal(signal.SIGINT)  # to qobs's pid only (`kill -INT`), not to its process group
    assert proc.wait(timeout=120) == -signal.SIGINT
    assert done.read_text() == "cleaned up"


@pytest.mark.parametrize(("make", "code", "needle"), [
    (lambda d: (d / "noexec.py").write_text("print(1)") and str(d / "noexec.py"), 126, "not executable"),
    (lambda d: str(d), 126, "a directory"),
    (lambda d: "", 127, "no command"),
])
def test_a_program_that_cannot_be_run_is_one_line_with_a_shells_code(tmp_path: Path, make, code: int,
                                                                       needle: str) -> None:
    proc = qobs("run", "--store", str(tmp_path / "r.db"), "--", make(tmp_path))
    _one_line_error(proc, needle)
    assert proc.returncode == code


def test_a_program_that_changes_directory_keeps_one_store_and_its_command_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "walker.py").write_text(textwrap.dedent("""
        import os, sys
        from qobs import telemetry
        os.chdir("sub")
        telemetry.record_event("moved", "here", {"argv": sys.argv})  # written by the store's thread, after the chdir
    """))
    proc = qobs("run", "--store", "rel.db", "--", sys.executable, "-m", "walker", "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "sub" / "rel.db").exists()
    (run,) = json.loads(qobs("runs", "list", "--json", "--store", str(tmp_path / "rel.db")).stdout)
    assert run["argv"] == [sys.executable, "-m", "walker", "--epochs", "2"] and run["status"] == "finished"


def test_a_budget_file_that_cannot_be_read_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    bad = tmp_path / "budgets.yaml"
    bad.write_text("budgets:\n  - {name: cap, shots: 1000, mode: blocked}\n")
    for var, needle in (("QOBS_BUDGETS", "mode"), ("QOBS_PRICES", "price")):
        proc = qobs("run", "--store", str(tmp_path / "r.db"), "--", sys.executable, "-c", "print('spent')",
                    **{var: str(bad if var == "QOBS_BUDGETS" else tmp_path / "none.yaml")})
        _one_line_error(proc, needle)
        assert proc.returncode == 2 and "spent" not in proc.stdout


def test_more_bad_input_is_one_line(tmp_path: Path) -> None:
    """Inputs that were tracebacks ("internal error, please report it") before."""
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("budgets: [{name: caf\xe9, shots: 1}]\n".encode("latin-1"))
    _one_line_error(qobs("budgets", "check", "--file", str(latin)), "not UTF-8")
    _one_line_error(qobs("alerts", "build", "--slo", str(latin), "-o", str(tmp_path / "out")), "not UTF-8")
    slo = tmp_path / "slo.yaml"
    slo.write_text("slos:\n  - {name: s, sli: job_success, objective: 0.99, window: 30d,\n"
                   "     selector: ['backend=~\"(ibm\"']}\n")
    _one_line_error(qobs("alerts", "build", "--slo", str(slo), "-o", str(tmp_path / "out")), "regular expression")
    (tmp_path / "afile").write_text("")
    _one_line_error(qobs("dashboards", "build", "-o", str(tmp_path / "afile" / "sub")), "cannot write the dashboards")
    store = tmp_path / "r.db"
    assert qobs("run", "--store", str(store), "--", sys.executable, "-c", "pass").returncode == 0
    _one_line_error(qobs("runs", "show", "%", "--store", str(store)), "no run '%'")  # not a LIKE pattern
    _one_line_error(qobs("demo", "--sdk", "pennylane", "--backend", "no.such.device", "--store", str(store)),
                    "no.such.device")


STORM_AT_EXIT = textwrap.dedent("""
    import os, signal, threading, time
    from qiskit import QuantumCircuit
    from qiskit_aer import AerSimulator
    from qobs import runtime
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.measure_all()
    job = AerSimulator(seed_simulator=1).run(qc, shots=10)  # never asked for: recorded at exit


    def storm():  # Ctrl-C pressed again and again while qobs records the last jobs at exit
        def press():
            while True:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.002)
        threading.Thread(target=press, daemon=True).start()
        time.sleep(0.05)


    runtime.add_exit_callback(storm)  # runs inside qobs's exit work, after the Qiskit adapter's own
""")


def test_ctrl_c_during_exit_does_not_cut_the_last_jobs_short(tmp_path: Path) -> None:
    script, store = tmp_path / "prog.py", tmp_path / "r.db"
    script.write_text(STORM_AT_EXIT)
    proc = qobs("run", "--store", str(store), "--", sys.executable, str(script), OMP_NUM_THREADS="1")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    shown = json.loads(qobs("runs", "show", "latest", "--json", "--store", str(store)).stdout)
    assert (shown["totals"]["jobs"], shown["totals"]["shots"]) == (1, 10), shown["totals"]


def test_otel_sdk_disabled_turns_off_export_only_and_an_unknown_adapter_is_refused(tmp_path: Path) -> None:
    from qobs import config

    s = config.from_env({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                         "OTEL_METRICS_EXPORTER": "otlp,prometheus", "QOBS_BUDGETS": "b.yaml"})
    assert s.enabled and s.store is not None and s.budgets == "b.yaml"  # qobs's own parts go on
    assert s.traces_exporter == "none" and s.metrics_exporters == ("prometheus",)
    kept = config.from_env({"OTEL_SDK_DISABLED": "xyz", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"})
    assert kept.traces_exporter == "otlp"  # as OpenTelemetry reads it: only "true" disables
    proc = qobs("run", "--store", str(tmp_path / "r.db"), "--", sys.executable, "-c", "print('ran')",
                QOBS_ADAPTERS="qiskitt")
    _one_line_error(proc, "no adapter named 'qiskitt'", "qiskit")
    assert "ran" not in proc.stdout


def test_reading_commands_never_change_a_database_that_is_not_a_store(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "app.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    for args in (["runs", "list"], ["runs", "show"], ["report"], ["fidelity", "baselines"]):
        _one_line_error(qobs(*args, "--store", str(other)), "not a qobs run store")
    _one_line_error(qobs("run", "--store", str(other), "--", sys.executable, "-c", "pass"), "not a qobs run store")
    assert other.read_bytes() == before and not (tmp_path / "app.sqlite-wal").exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    _one_line_error(qobs("runs", "list", "--store", str(empty)), "empty")
    budgets = tmp_path / "b.yaml"
    budgets.write_text("budgets:\n  - {name: cap, shots: 1000}\n")
    _one_line_error(qobs("budgets", "status", "--file", str(budgets), "--store", str(tmp_path / "none.db")),
                    "no run store")
    assert not (tmp_path / "none.db").exists() and empty.read_bytes() == b""


def test_an_option_before_the_command_is_named_as_such(tmp_path: Path) -> None:
    _one_line_error(qobs("run", "--store", str(tmp_path / "r.db"), "--bogus", "--", "true"), "no such option: --bogus")


def test_the_report_of_a_failed_run_says_so_first(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    assert qobs("run", "--store", str(store), "--", sys.executable, "-c", "raise SystemExit(3)").returncode == 3
    report = json.loads(qobs("report", "latest", "--json", "--store", str(store)).stdout)
    assert report["findings"][:1] == ["the run failed (exit code 3)"]


def test_feature_files_and_settings_refuse_what_cannot_mean_anything(tmp_path: Path) -> None:
    for text, needle in (("budgets:\n  - {name: cap, shots: 10, period: 'rolling:0s'}\n", "period"),
                         ("budgets:\n  - {name: cap, shots: 10, mode: fallback, fallback: 42}\n", "fallback"),
                         ("version: 99\nprices: []\n", "version 99")):
        f = tmp_path / "f.yaml"
        f.write_text(text)
        _one_line_error(qobs("budgets", "check", "--file", str(f)) if "budgets" in text else
                        qobs("budgets", "check", "--file", str(tmp_path / "none.yaml"), QOBS_PRICES=str(f)), needle)
    proc = qobs("alerts", "check", "-d", str(tmp_path / "nosuchdir"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr, proc.stderr
    _one_line_error(qobs("run", "--", sys.executable, "-c", "pass", QOBS_FIDELITY_SEED="-1"),
                    "between 0 and 9223372036854775807")


def test_run_in_process_returns_the_signal_as_an_exit_code(tmp_path: Path) -> None:
    """Invoked in-process (a test's CliRunner), a program ended by a signal gives exit code 128 + N; only the
    qobs command itself ends by the signal (it killed the process hosting it)."""
    from click.testing import CliRunner

    from qobs import cli

    out = CliRunner().invoke(cli.main, ["run", "--store", "off", "--", "sh", "-c", "kill -TERM $$"])
    assert out.exit_code == 143, out.output
    proc = subprocess.run([*QOBS, "run", "--store", "off", "--", "sh", "-c", "kill -TERM $$"], env=_env(),
                          timeout=120)
    assert proc.returncode == -15
