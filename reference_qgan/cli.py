"""``qobs qgan``: train the reference QGAN and sample from its checkpoints."""

from __future__ import annotations

from typing import Any

import click

from reference_qgan.train import PROFILES


@click.group()
def qgan() -> None:
    """The reference QGAN: train it, sample from a checkpoint."""


@qgan.command("sample")
@click.option("--checkpoint", "path", required=True, type=click.Path(dir_okay=False), help="Checkpoint JSON file.")
@click.option("-n", "n", default=1000, show_default=True, type=click.IntRange(1, 10_000_000), help="Samples.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--sdk", type=click.Choice(["numpy", "qiskit", "pennylane"]), default="numpy", show_default=True,
              help="numpy: the exact distribution of the parameters; qiskit/pennylane: run the circuit.")
@click.option("--ansatz", help="Refuse the checkpoint unless it was trained with this ansatz.")
@click.option("--target", help="Refuse the checkpoint unless it was trained for this target.")
@click.option("--raw", is_flag=True, help="Print the samples, one per line, instead of a histogram.")
def sample_cmd(path: str, n: int, seed: int, sdk: str, ansatz: str | None, target: str | None, raw: bool) -> None:
    """Draw N samples from a trained generator and show their histogram."""
    import numpy as np

    from reference_qgan import checkpoint, train
    from reference_qgan import targets as tg

    doc = checkpoint.load(path)
    enc = dict(doc["encoding"])
    expected = {**enc, **({"ansatz": ansatz} if ansatz else {}), **({"target": target} if target else {})}
    doc = checkpoint.load(path, expected)
    values = train.sample(doc, n, seed=seed, sdk=sdk)
    if raw:
        click.echo("\n".join(str(int(v)) for v in values))
        return
    hist = np.bincount(values, minlength=enc["bins"]) / len(values)
    q = tg.target(enc["target"], enc["bins"]) if enc.get("target") in tg.TARGETS else None
    click.echo(f"{n} samples from {path} (step {doc['step']}, {enc['ansatz']}, target {enc['target']})")
    click.echo(bars(hist, q))


def bars(p: Any, q: Any = None, width: int = 40) -> str:
    """Generated (and target) distribution as terminal bars."""
    top = max(float(max(p)), float(max(q)) if q is not None else 0.0) or 1.0
    lines = [f"{'value':>5}  {'generated':<{width}} {'p':>6}" + ("  target" if q is not None else "")]
    for k, v in enumerate(p):
        bar = "█" * round(width * v / top)
        line = f"{k:>5}  {bar:<{width}} {v:6.3f}"
        if q is not None:
            mark = round(width * q[k] / top)
            line = f"{k:>5}  {_overlay(bar, mark, width)} {v:6.3f}  {q[k]:.3f}"
        lines.append(line)
    return "\n".join(lines)


def _overlay(bar: str, mark: int, width: int) -> str:
    cells = list(bar.ljust(width))
    if mark > 0:
        cells[min(mark, width) - 1] = "┃" if cells[min(mark, width) - 1] == " " else "╋"
    return "".join(cells)


@qgan.command("train")
@click.option("--profile", type=click.Choice(list(PROFILES)), default="standard", show_default=True)
@click.option("--sdk", type=click.Choice(["qiskit", "pennylane"]), default="qiskit", show_default=True)
@click.option("--backend", help="aer, statevector, sim, fake_<name> (Qiskit) or a device name (PennyLane).")
@click.option("--shots", default="1024", show_default=True, help="Shots per circuit, or 'exact'.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--ansatz", type=click.Choice(["efficient_su2", "paper"]), default="efficient_su2", show_default=True)
@click.option("--target", type=click.Choice(["lognormal", "triangular", "bimodal"]), default="lognormal",
              show_default=True)
@click.option("--checkpoint-dir", default="qgan-checkpoints", show_default=True)
def train_cmd(profile: str, sdk: str, backend: str | None, shots: str, seed: int, ansatz: str, target: str,
              checkpoint_dir: str) -> None:
    """Train the reference QGAN (instrumented when qobs is), print its quality and checkpoints."""
    from qobs.errors import ConfigError
    from reference_qgan.train import TrainConfig, train

    try:
        n_shots = None if shots == "exact" else int(shots)
    except ValueError:
        raise ConfigError(f"--shots must be a positive integer or 'exact', not {shots!r}") from None
    cfg = TrainConfig.profile(profile, sdk=sdk, backend=backend, shots=n_shots, seed=seed, ansatz=ansatz,
                              target=target, checkpoint_dir=checkpoint_dir)
    r = train(cfg, on_step=lambda i, row: click.echo(
        f"\rstep {i + 1}/{cfg.epochs}  KL {row['kl']:.3f}", nl=False) if (i + 1) % 10 == 0 else None)
    click.echo(f"\rtrained {r.steps} steps in {r.seconds:.1f} s on {r.backend['sdk']}/{r.backend['backend']}")
    click.echo(f"final KL {r.final['kl']:.4f} KS {r.final['ks']:.4f}; best KL {r.best['kl']:.4f} "
               f"KS {r.best['ks']:.4f} at step {r.best['step']}")
    for kind, p in r.checkpoints.items():
        click.echo(f"{kind} checkpoint: {p}")
