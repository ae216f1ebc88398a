"""``qobs dashboards``: write the Grafana dashboards generated from the contract."""

from __future__ import annotations

import click


@click.group()
def dashboards() -> None:
    """Grafana dashboards generated from the SLI contract."""


@dashboards.command("build")
@click.option("-o", "--output", "outdir", default="dashboards", show_default=True,
              type=click.Path(file_okay=False), help="Directory to write the dashboard JSON files into.")
def build(outdir: str) -> None:
    """Write the executive, on-call and debug dashboards (Grafana JSON, schemaVersion 41)."""
    from qobs.dashboards import write
    from qobs.errors import QobsError

    try:
        paths = write(outdir)
    except OSError as exc:
        raise QobsError(f"cannot write the dashboards into {outdir}: {exc.strerror or exc}") from None
    for path in paths:
        click.echo(str(path))
