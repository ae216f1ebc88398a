"""``qobs probe`` and ``qobs budgets``: loaded only when named (see ``qobs.cli.LAZY_COMMANDS``)."""

from __future__ import annotations

import time

import click

from qobs.errors import ConfigError, QobsError


@click.command("probe")
@click.option("--backend", "backend_name", required=True,
              help="aer_simulator, sim_<name> (qobs.sim), fake_<name> (IBM fake backends) or a PennyLane "
              "device (default.qubit).")
@click.option("--interval", default=60.0, show_default=True, type=click.FloatRange(0.0), help="Seconds between probes.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(0),
              help="Probes to run (0: until interrupted).")
@click.option("--shots", default=1024, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--store", help="Run store path.")
def probe_command(backend_name: str, interval: float, count: int, shots: int, seed: int, store: str | None) -> None:
    """Run the reference circuit (3-qubit GHZ) on a backend and check its fidelity, periodically."""
    import qobs
    from qobs import budgets, config, cost, fidelity

    s = config.from_env(**({"store": store} if store else {}))  # a bad variable: one line, exit 2
    cost.load_catalog(s.prices)  # a bad price file: one line, exit 2
    if s.budgets:
        budgets.parse_file(s.budgets)
    if store:
        qobs.configure(store=store)
    qobs.instrument()
    qobs.annotate_run(name=f"probe {backend_name}")
    backend = fidelity.resolve_backend(backend_name)
    failures = 0
    n = 0
    try:
        while count == 0 or n < count:
            if n:
                time.sleep(interval)
            n += 1
            try:
                r = fidelity.probe(backend, shots=shots, seed=seed)
            except QobsError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed probe is reported, the schedule goes on
                failures += 1
                click.echo(f"probe {n} {backend_name}: failed: {type(exc).__name__}: {exc}", err=True)
                continue
            base = f"{r.check.baseline:.3f}" if r.check.baseline is not None else "collecting"
            click.echo(f"probe {n} {r.backend}: fidelity {r.fidelity:.3f} ({r.check.result}, baseline {base}) "
                       f"in {r.seconds:.2f} s")
    except KeyboardInterrupt:
        pass
    finally:
        qobs.shutdown()
    if failures:
        raise SystemExit(1)


@click.group("budgets")
def budgets_command() -> None:
    """Shot and money budgets (QOBS_BUDGETS)."""


@budgets_command.command("check")
@click.option("--file", "path", help="Budgets file (default: $QOBS_BUDGETS).")
def budgets_check(path: str | None) -> None:
    """Validate the budgets file and the price catalog; exit 2 with one line when one is wrong."""
    from qobs import budgets, config
    from qobs.cost import load_catalog

    s = config.from_env()
    cat = load_catalog(s.prices)
    click.echo(f"prices: {len(cat.prices)} entries ({s.prices or 'bundled only'})")
    path = path or s.budgets
    if not path:
        raise ConfigError("no budgets file: set QOBS_BUDGETS or pass --file")
    for b in budgets.parse_file(path):
        limits = " and ".join(x for x in (f"{b.shots} shots" if b.shots else "", f"{b.usd} USD" if b.usd else "") if x)
        scope = ", ".join(f"{k}={v}" for k, v in b.scope.items()) or "all"
        click.echo(f"budget {b.name}: {limits} per {b.period}, scope {scope}, mode {b.mode}")


@budgets_command.command("status")
@click.option("--file", "path", help="Budgets file (default: $QOBS_BUDGETS).")
@click.option("--store", help="Run store path.")
def budgets_status(path: str | None, store: str | None) -> None:
    """Usage of each budget in its current period, read from the run store."""
    from qobs import budgets, config, features
    from qobs.cli import _open_store

    s = config.from_env(**({"store": store} if store else {}))
    _open_store(store).close()  # a store that is not there is one line, not a new empty store
    path = path or s.budgets
    if not path:
        raise ConfigError("no budgets file: set QOBS_BUDGETS or pass --file")
    features._settings = s
    now = time.time()
    for b in budgets.parse_file(path):
        used_shots, used_usd = budgets._used(b, now)
        click.echo(f"budget {b.name} ({b.period_key(now)}): {used_shots} shots, {used_usd} USD used; "
                   f"{budgets._describe_left(b, used_shots, used_usd)}")


@click.group("fidelity")
def fidelity_command() -> None:
    """Fidelity baselines kept in the run store."""


@fidelity_command.command("baselines")
@click.option("--store", help="Run store path.")
def fidelity_baselines(store: str | None) -> None:
    """The baseline each probed backend's next checks compare with."""
    from qobs.cli import _open_store, _ts
    from qobs.fidelity import checked_backends, stored_baseline

    conn = _open_store(store)
    subjects = checked_backends(conn)
    if not subjects:
        click.echo("no fidelity checks in the store")
    for backend in subjects:
        found = stored_baseline(conn, backend)
        if found is None:
            click.echo(f"{backend}: none (the next checks establish it)")
        else:
            click.echo(f"{backend}: {found['baseline']:.4f} (as of {_ts(found['ts'])}, run {found['run_id']})")


@fidelity_command.command("rebaseline")
@click.argument("backend")
@click.option("--store", help="Run store path.")
def fidelity_rebaseline(backend: str, store: str | None) -> None:
    """Accept the backend as it is now: its next checks establish a new baseline (after a recalibration)."""
    import json

    from qobs.cli import _open_store
    from qobs.fidelity import REBASELINE, checked_backends, stored_baseline

    conn = _open_store(store)
    checked = checked_backends(conn)
    if backend not in checked:
        known = ", ".join(checked) if checked else "none"
        raise QobsError(f"no fidelity checks of {backend!r} in the store, so no baseline to clear "
                        f"(checked backends: {known})")
    old = stored_baseline(conn, backend)
    conn.execute("INSERT INTO events (run_id, ts, kind, subject, data) VALUES (NULL, ?, ?, ?, ?)",
                 (time.time(), REBASELINE, backend, json.dumps({"previous": old and old["baseline"]})))
    was = f"was {old['baseline']:.4f}" if old else "none was kept"
    click.echo(f"{backend}: baseline cleared ({was}); the next checks establish a new one")
