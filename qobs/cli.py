"""The ``qobs`` command. Imports stay inside commands: ``qobs --help`` loads no SDK."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click

from qobs import __version__
from qobs.errors import CommandError, QobsError

EXIT_USAGE = 2


def _fail(message: str) -> None:
    raise click.ClickException(message)


# Commands that live beside the feature they drive, loaded only when named (keeps start-up fast).
LAZY_COMMANDS: dict[str, str] = {
    "alerts": "qobs.slo.cli:alerts",
    "dashboards": "qobs.dashboards.cli:dashboards",
    "probe": "qobs.feature_cli:probe_command",
    "budgets": "qobs.feature_cli:budgets_command",
    "fidelity": "qobs.feature_cli:fidelity_command",
    "qgan": "reference_qgan.cli:qgan",
    "report": "qobs.report:report",
}


# One-line help for the lazy commands, so that `qobs --help` lists them without importing them.
LAZY_HELP: dict[str, str] = {
    "alerts": "SLOs as code: build and check Prometheus alert rules.",
    "budgets": "Shot and money budgets: check files, show state.",
    "dashboards": "Build the Grafana dashboards from the SLI contract.",
    "fidelity": "Fidelity baselines kept in the run store: show, rebaseline.",
    "probe": "Run the reference-circuit fidelity probe on a backend.",
    "qgan": "The reference QGAN: train, and sample from checkpoints.",
    "report": "Postmortem of a recorded run: findings, timeline, errors, latency, cost.",
}


class _Group(click.Group):
    """Turns QobsError (and any unexpected error) into one line and a non-zero exit.

    Also resolves ``LAZY_COMMANDS`` ("module:attribute") on first use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(LAZY_COMMANDS if self.name == "main" else ())})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.name != "main":
            return super().format_commands(ctx, formatter)
        rows = []
        for name in self.list_commands(ctx):
            cmd = super().get_command(ctx, name)
            if cmd is not None:
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
            else:
                rows.append((name, LAZY_HELP.get(name, "")))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        return None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is None and self.name == "main" and name in LAZY_COMMANDS:
            import importlib

            mod, _, attr = LAZY_COMMANDS[name].partition(":")
            cmd = getattr(importlib.import_module(mod), attr)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QobsError as exc:
            click.echo(f"qobs: error: {exc}", err=True)
            ctx.exit(getattr(exc, "exit_code", EXIT_USAGE))
        except BrokenPipeError:  # `qobs runs list | head -1`: the reader went away; say nothing more
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(128 + signal.SIGPIPE)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - never a traceback for a person
            click.echo(f"qobs: internal error: {type(exc).__name__}: {exc} (please report it)", err=True)
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qobs")
def main() -> None:
    """Observability and SLOs for quantum machine learning."""


def _settings(store: str | None = None) -> Any:
    from qobs import config

    return config.from_env(**({"store": store} if store else {}))


def _open_store(store: str | None) -> Any:
    from qobs import config
    from qobs.store import connect

    s = _settings(store)
    path = config.store_path(s)
    if path is None:
        raise QobsError("the run store is off (QOBS_STORE=off); point QOBS_STORE or --store at a store")
    return connect(path, create=False)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--store", help="Run store path (default: $QOBS_STORE or ./.qobs/runs.db).")
@click.option("--name", help="A name for this run.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
def run(store: str | None, name: str | None, command: tuple[str, ...]) -> None:
    """Run a program with qobs instrumentation, unmodified: qobs run -- python train.py ARGS."""
    from qobs import config, runtime
    from qobs.redact import redact_argv
    from qobs.store import Writer

    s = _settings(store)  # validates the environment: a bad value is one line here, exit 2
    cmd = list(command)
    _check_runnable(cmd[0])
    _check_feature_files(s)
    env = dict(os.environ)
    run_id = runtime.new_run_id()
    boot = str(Path(__file__).with_name("_bootstrap"))
    env["PYTHONPATH"] = os.pathsep.join([boot, *filter(None, [env.get("PYTHONPATH")])])
    env["QOBS_AUTO_INSTRUMENT"] = "1"
    env["QOBS_RUN_ID"] = run_id
    env["QOBS_RUN_ARGV"] = json.dumps(redact_argv(cmd))  # what was run (`-m module` is gone from sys.argv early)
    if name:
        env["QOBS_RUN_NAME"] = name
    path = config.store_path(s)
    if path is not None:
        env["QOBS_STORE"] = str(path)  # absolute: a program that changes directory keeps this store
        Writer(path).close()  # fail now, with one line, if the store cannot be opened
    elif store:
        env["QOBS_STORE"] = store
    code = _run_forwarding_signals(cmd, env)
    exit_code = code if code >= 0 else 128 - code
    if path is not None:
        _close_run(path, run_id, exit_code, redact_argv(cmd))
    if code < 0:
        raise EndedBySignal(-code)
    sys.exit(exit_code)


class EndedBySignal(SystemExit):
    """The program `qobs run` ran was ended by a signal: exit code 128 + N wherever qobs runs in-process (a test's
    CliRunner); the ``qobs`` command itself then ends by the same signal (``entry``)."""

    def __init__(self, sig: int) -> None:
        super().__init__(128 + sig)
        self.signal = sig


def _check_runnable(program: str) -> None:
    """A one-line error, with a shell's exit code, for a program that cannot be run."""
    import shutil

    if not program:
        raise CommandError("no command to run: qobs run -- python train.py", 127)
    if shutil.which(program) is not None:
        return
    if program.startswith("-"):
        raise QobsError(f"no such option: {program} (the command goes after --: qobs run -- python train.py)")
    if os.sep in program and Path(program).exists():
        what = "a directory" if Path(program).is_dir() else "not executable"
        raise CommandError(f"cannot run {program}: {what}", 126)
    raise CommandError(f"command not found: {program}", 127)


def _check_feature_files(s: Any) -> None:
    """Budget and price files the run would use are read now: a budget that cannot be read must stop the
    run before it spends, not leave it running unguarded (a running program only logs the failure). So
    are the adapters named in QOBS_ADAPTERS (a typo would instrument nothing)."""
    if s.adapters:
        from qobs.instrumentation import discover

        installed = sorted(discover())
        unknown = sorted(set(s.adapters) - set(installed))
        if unknown:
            raise QobsError(f"QOBS_ADAPTERS: no adapter named {unknown[0]!r} "
                            f"(installed: {', '.join(installed) or 'none'})")
    if s.budgets:
        from qobs import budgets

        budgets.parse_file(s.budgets)
    if s.prices:
        from qobs import cost

        cost.load_catalog(s.prices)


# The signals qobs passes on to the program. si_code of a signal the kernel sent itself: a terminal's
# Ctrl-C / Ctrl-\ (and a hang-up) go to the whole foreground process group, the program included.
_FORWARDED = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, n))
_SI_KERNEL = 0x80


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` and wait for it, passing on the signals sent to qobs itself; its return code.

    A signal the terminal sent reached the program already: sending it again would interrupt the
    program's own clean-up (its ``finally`` blocks), so only signals some process sent are passed on.
    Signals that arrive while the program starts are kept and passed on once it runs (their default
    action would end qobs and leave the program running, orphaned)."""
    siginfo = hasattr(signal, "sigtimedwait")
    waited = {*_FORWARDED, signal.SIGCHLD} if siginfo else set()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, []) if siginfo else None  # as found, given back at the end
    early: list[int] = []
    held: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        held = {sig: signal.signal(sig, lambda n, _f: early.append(n)) for sig in _FORWARDED}
    try:
        try:
            proc = subprocess.Popen(cmd, env=env)
        except OSError as exc:
            raise CommandError(f"cannot run {cmd[0]}: {exc.strerror or exc}", 126) from None
        if siginfo:
            signal.pthread_sigmask(signal.SIG_BLOCK, waited)  # from here on they wait for sigtimedwait
    finally:
        _restore_handlers(held)
    for sig in early:
        proc.send_signal(sig)
    if not siginfo:  # no siginfo here: pass everything on
        previous = {sig: signal.signal(sig, lambda n, _f: proc.send_signal(n)) for sig in _FORWARDED} if held else {}
        try:
            return proc.wait()
        finally:
            _restore_handlers(previous)
    try:
        while proc.poll() is None:
            info = signal.sigtimedwait(waited, 1.0)  # the program's end wakes it (SIGCHLD)
            if info is not None and info.si_signo != signal.SIGCHLD and info.si_code != _SI_KERNEL:
                proc.send_signal(info.si_signo)
        while signal.sigtimedwait(waited, 0) is not None:
            pass  # what arrived as the program ended was for the program
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return proc.returncode


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():  # None: a handler installed from C, which Python cannot restore
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def _die_like_the_child(sig: int) -> None:
    """End qobs by the signal that ended the program, as ``env`` and ``timeout`` do: a shell loop stops on
    Ctrl-C, a parent process sees the signal. No core dump of qobs itself (its soft limit only)."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), sig)
    except (OSError, ValueError, ImportError):
        pass  # a signal that cannot end us: the exit code says it (128 + N)


def _close_run(path: Path, run_id: str, exit_code: int, argv: list[str]) -> None:
    import time

    from qobs.errors import contained
    from qobs.store import connect

    status = "finished" if exit_code == 0 else "interrupted" if exit_code in (130, 143) else "failed"
    with contained("store"):
        conn = connect(path)
        # The row exists unless the program recorded nothing (not Python, or killed before its first commit):
        # then this is the run's only row, and it names the command.
        conn.execute("INSERT INTO runs (run_id, started_at, status, exit_code, ended_at, argv) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, "
                     "exit_code = excluded.exit_code, ended_at = COALESCE(runs.ended_at, excluded.ended_at)",
                     (run_id, time.time(), status, exit_code, time.time(), json.dumps(argv)))
        conn.close()


@main.group()
def runs() -> None:
    """Runs recorded in the embedded store."""


@runs.command("list")
@click.option("--store", help="Run store path.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def runs_list(store: str | None, limit: int, as_json: bool) -> None:
    """List recent runs."""
    from qobs.store import list_runs

    rows = list_runs(_open_store(store), limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no runs yet")
        return
    click.echo(f"{'RUN':<25} {'STARTED':<19} {'STATUS':<11} {'JOBS':>6} {'SHOTS':>10}  COMMAND")
    for r in rows:
        argv = " ".join(r.get("argv") or [])[:60]
        click.echo(f"{r['run_id']:<25} {_ts(r['started_at']):<19} {r['status'] or '':<11} {r['jobs']:>6} "
                   f"{r['shots']:>10}  {argv}")


@runs.command("prune")
@click.option("--older-than", "older_than", metavar="DURATION",
              help="Delete runs last active longer ago than this (30d, 12h, 2w).")
@click.option("--keep-last", type=click.IntRange(0), help="Never delete the N most recently started runs.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--vacuum", is_flag=True, help="Then give the freed space back to the file system (VACUUM).")
@click.option("--store", help="Run store path.")
def runs_prune(older_than: str | None, keep_last: int | None, dry_run: bool, vacuum: bool, store: str | None) -> None:
    """Delete old runs with their jobs, steps and events (the store grows with every job).

    Budget usage is kept, and so is each backend's fidelity baseline (its deciding event)."""
    import time

    from qobs.fidelity import REBASELINE, baseline_event
    from qobs.slo.spec import parse_duration
    from qobs.store import prunable_runs, prune_runs

    if older_than is None and keep_last is None:
        raise QobsError("say what to keep: --older-than DURATION and/or --keep-last N")
    age = parse_duration(older_than, "--older-than") if older_than is not None else None
    conn = _open_store(store)
    doomed = prunable_runs(conn, age, keep_last, time.time())
    if dry_run or (not doomed and not vacuum):
        for r in doomed:
            click.echo(f"would delete run {r['run_id']} (started {_ts(r['started_at'])}, last active "
                       f"{_ts(r['last_active'])}, {r['status'] or '-'})")
        click.echo(f"{len(doomed)} runs to delete" + (" (dry run)" if dry_run and doomed else ""))
        return
    keep = set()
    for (subject,) in conn.execute("SELECT DISTINCT subject FROM events WHERE kind IN ('fidelity_check', ?) "
                                   "AND subject IS NOT NULL", (REBASELINE,)):
        row = baseline_event(conn, subject)
        if row is not None:
            keep.add(row[4])
    import sqlite3

    try:
        n = prune_runs(conn, [r["run_id"] for r in doomed], keep)
    except sqlite3.OperationalError as exc:  # another process held the store past the busy timeout
        raise QobsError(f"the store stayed locked ({exc}); some runs may be deleted already: "
                        "run the same command again") from None
    click.echo(f"deleted {n['runs']} runs: {n['jobs']} jobs, {n['steps']} steps, {n['events']} events"
               + ("" if vacuum else "; the file shrinks with --vacuum"))
    if vacuum:
        try:
            conn.execute("VACUUM")
        except sqlite3.OperationalError as exc:  # another process holds the store (a run writing to it)
            raise QobsError(f"the runs were deleted, but the store could not be vacuumed now ({exc}); "
                            "run `qobs runs prune --vacuum` again when no run is writing to it") from None
        click.echo("vacuumed")


def _ts(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


@runs.command("show")
@click.argument("run_ref", default="latest")
@click.option("--store", help="Run store path.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def runs_show(run_ref: str, store: str | None, as_json: bool) -> None:
    """Totals per backend and provenance of one run (RUN id, prefix, or 'latest')."""
    from qobs.store import resolve_run, run_summary, snapshot

    conn = _open_store(store)
    run_row = resolve_run(conn, run_ref)
    with snapshot(conn):
        summary = run_summary(conn, run_row["run_id"])
    if as_json:
        click.echo(json.dumps({"run": run_row, **summary}, indent=2, default=str))
        return
    click.echo(_format_run(run_row, summary))


def _format_run(r: dict[str, Any], s: dict[str, Any]) -> str:
    dur = f"{r['ended_at'] - r['started_at']:.1f} s" if r.get("ended_at") else "running or cut off"
    lines = [f"run {r['run_id']}" + (f" ({r['name']})" if r.get("name") else ""),
             f"  status   {r.get('status')}" + (f", exit {r['exit_code']}" if r.get("exit_code") is not None else ""),
             f"  started  {_ts(r['started_at'])}, {dur}",
             f"  command  {' '.join(r.get('argv') or [])}",
             f"  versions qobs {r.get('qobs_version')}, python {r.get('python')}, qiskit {r.get('qiskit')}, "
             f"qiskit-aer {r.get('qiskit_aer')}, pennylane {r.get('pennylane')}",
             f"  host     {r.get('host')}  git {(r.get('git_commit') or '-')[:12]}  seed {r.get('seed')}", ""]
    t = s["totals"]
    lines.append(f"{'BACKEND':<24} {'JOBS':>7} {'CIRCUITS':>9} {'SHOTS':>11} {'ERRORS':>7} {'COST':>12}  p95 JOB")
    for name, b in s["backends"].items():
        cost = f"{b['cost']} {b['currency'] or ''}".strip() if b["unpriced_jobs"] < b["jobs"] else "unpriced"
        p95 = f"{b['job_duration_p95_s'] * 1000:.1f} ms" if b["job_duration_p95_s"] is not None else "-"
        lines.append(f"{name:<24} {b['jobs']:>7} {b['circuits']:>9} {b['shots']:>11} {b['errors']:>7} "
                     f"{cost:>12}  {p95}")
    lines.append(f"{'total':<24} {t['jobs']:>7} {t['circuits']:>9} {t['shots']:>11} {t['errors']:>7}")
    tr = s["training"]
    if tr["steps"]:
        lines.append(f"\ntraining: {tr['steps']} steps (last {tr['last_step']}), {tr['samples']} samples")
    if s["events"]:
        lines.append("events: " + ", ".join(f"{k} {v}" for k, v in sorted(s["events"].items())))
    return "\n".join(lines)


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 when docs/contract.md differs from the contract.")
def contract(check: bool) -> None:
    """Print the SLI contract (metrics, span attributes, SLO thresholds) as Markdown."""
    from qobs.contract import markdown

    text = markdown()
    if check:
        path = Path("docs/contract.md")
        if not path.exists() or path.read_text() != text:
            _fail("docs/contract.md is out of date; run `qobs contract > docs/contract.md`")
        return
    click.echo(text, nl=False)


@main.command()
@click.option("--store", help="Run store path (default: $QOBS_STORE or ./.qobs/runs.db).")
@click.option("--sdk", type=click.Choice(["qiskit", "pennylane"]), default="qiskit", show_default=True)
@click.option("--backend", help="Qiskit: sim (default when installed), aer, statevector, fake_<name>; "
              "PennyLane: a device name (default.qubit).")
@click.option("--profile", type=click.Choice(["tiny", "fast", "demo", "standard", "full"]),
              help="Epochs: tiny 20, demo 100, fast 150, standard 500, full 1000 (default: demo on the simulated "
              "QPU, standard elsewhere).")
@click.option("--epochs", type=click.IntRange(1, 100_000), help="Override the profile's epochs.")
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--shots", default="1024", show_default=True, help="Shots per circuit, or 'exact'.")
def demo(store: str | None, sdk: str, backend: str | None, profile: str | None, epochs: int | None, seed: int,
         shots: str) -> None:
    """Train the reference QGAN, instrumented, on the embedded store and summarise the run."""
    from qobs import demo as demo_mod

    if shots != "exact" and not shots.isdigit():
        raise QobsError(f"--shots must be a positive integer or 'exact', not {shots!r}")
    code = demo_mod.run(store=store, sdk=sdk, backend=backend, profile=profile, seed=seed, shots=shots,
                        epochs=epochs)
    if code:
        sys.exit(code)


def entry() -> None:
    """The ``qobs`` command: ``main``, ending by the signal that ended the program `qobs run` ran."""
    try:
        main()
    except EndedBySignal as exc:
        _die_like_the_child(exc.signal)
        raise


if __name__ == "__main__":  # pragma: no cover
    entry()
