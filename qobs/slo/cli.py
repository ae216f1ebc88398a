"""``qobs alerts``: build the Prometheus rule files (and their promtool tests) from an SLO file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from qobs.errors import ConfigError

BUNDLED_SOURCE = "the bundled profiles (qobs/slo/default.yaml)"
INHIBIT_NOTE = ("# Merge into alertmanager.yml: while an SLO alerts for a backend, the SLOs listed after it\n"
                "# for the same SLI stay quiet there at the same severity (one page per failing backend,\n"
                "# not one per tier).\n")


def render(slo_file: str | None, out_dir: str = "alerts") -> dict[str, str]:
    """Relative path -> text of every generated file (rule files, ``tests/*.test.yml``, ``runbooks/*.md`` and
    Alertmanager inhibit rules for overlapping SLOs)."""
    from qobs.slo import promtests, rules, runbooks, spec

    s = spec.load(slo_file)
    source = _source(slo_file, out_dir)
    files = rules.build(s, source)
    tests = promtests.build(s, files, source)
    inhibit = rules.inhibitions(s)
    extra = {rules.INHIBIT_FILE: rules.HEADER.format(source=source) + INHIBIT_NOTE + rules.dump(inhibit)} \
        if inhibit["inhibit_rules"] else {}
    return {**files, **{f"tests/{k}": v for k, v in tests.items()}, **runbooks.build(files), **extra}


_LAYOUT = ("*.rules.yml", "tests/*.test.yml")  # what build writes that Prometheus and promtool load


def stale_files(out: Path, files: dict[str, str], source: str) -> list[str]:
    """Rule and test files in ``out`` that an earlier build from the same SLO file wrote and this one would
    not (a renamed or removed SLO): left there, Prometheus would keep loading their rules (every alert twice).

    Only files in build's own layout whose first line is build's header naming the same source qualify:
    a hand-written file, a copy elsewhere or another SLO file's output in the same directory is never one.
    Runbooks are left (nothing loads them)."""
    from qobs.slo import rules

    header = rules.HEADER.format(source=source)
    stale = []
    for pattern in (*_LAYOUT, rules.INHIBIT_FILE):
        for p in sorted(out.glob(pattern)):
            rel = p.relative_to(out).as_posix()
            if rel in files or not p.is_file() or p.is_symlink():
                continue
            try:
                with p.open(encoding="utf-8", errors="replace") as f:
                    first = f.readline()
            except OSError:
                continue
            if first == header:
                stale.append(rel)
    return stale


def _source(slo_file: str | None, out_dir: str) -> str:
    """How the files name their SLO file: its path from the output directory (the same wherever the build
    runs from, and two SLO files of one name in different folders are told apart)."""
    if slo_file is None:
        return BUNDLED_SOURCE
    slo, out = Path(slo_file).resolve(), Path(out_dir).resolve()
    try:
        return Path(os.path.relpath(slo, out)).as_posix()
    except ValueError:  # another drive (Windows)
        return slo.as_posix()


@click.group()
def alerts() -> None:
    """Prometheus alert rules from SLOs (burn rates, budgets, drift), with promtool tests."""


@alerts.command("build")
@click.option("--slo", "slo_file", type=click.Path(dir_okay=False), help="SLO file (default: bundled profiles).")
@click.option("-o", "--out", "out_dir", default="alerts", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the rule files (tests go to OUT/tests).")
def build_cmd(slo_file: str | None, out_dir: str) -> None:
    """Write rule files, promtool test suites, runbooks and Alertmanager inhibit rules for an SLO file
    (and remove the rule and test files an earlier build from it wrote and this one does not)."""
    files = render(slo_file, out_dir)
    out = Path(out_dir)
    try:
        for rel, text in files.items():
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        stale = stale_files(out, files, _source(slo_file, out_dir))
        for rel in stale:
            (out / rel).unlink()
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out} ({exc.strerror or exc})") from None
    gone = f"; removed {len(stale)} it wrote before and no longer does ({', '.join(stale)})" if stale else ""
    click.echo(f"wrote {len(files)} files to {out}/{gone} (check: promtool check rules {out}/*.rules.yml; "
               f"promtool test rules {out}/tests/*.test.yml)")


@alerts.command("check")
@click.option("--slo", "slo_file", type=click.Path(dir_okay=False), help="SLO file (default: bundled profiles).")
@click.option("-d", "--dir", "out_dir", default="alerts", show_default=True, type=click.Path(file_okay=False))
def check_cmd(slo_file: str | None, out_dir: str) -> None:
    """Validate the SLO file; exit 1 when DIR differs from what `qobs alerts build` would write."""
    files = render(slo_file, out_dir)
    out = Path(out_dir)
    cmd = "qobs alerts build" + (f" --slo {slo_file}" if slo_file else "") + f" -o {out_dir}"
    if not out.is_dir():
        raise click.ClickException(f"{out_dir}/ does not exist; run `{cmd}`")
    stale = [rel for rel, text in files.items() if not (out / rel).exists() or (out / rel).read_text() != text]
    stale += stale_files(out, files, _source(slo_file, out_dir))
    if stale:
        raise click.ClickException(f"{out_dir}/ is out of date ({', '.join(stale)}); run `{cmd}`")
    click.echo(f"{out_dir}/ is up to date ({len(files)} files)")
