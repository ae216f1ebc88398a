"""The training loop of the reference QGAN (Zoufal, Lucchi and Woerner's setting), instrumented.

One epoch = one generator step and ``d_steps`` discriminator steps:

1. generator: ONE primitive call / device batch runs the current parameters and their 2P
   parameter-shift neighbours (+-pi/2, exact for the RY/RZ gates used); the centre row is the
   generated histogram, the shifted rows give the gradient of the non-saturating generator loss
   ``L_G = -sum_k p_k log D(k)`` (its standard error per component, from the shot counts, gives
   the gradient SNR); one Adam step;
2. discriminator: Adam steps on the weighted BCE of the target vs the generated histogram;
3. evaluation: divergences of the generated histogram from the target (telemetry), and the exact
   divergences of the current parameters (a 3-qubit statevector, for checkpoints and quality gates).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reference_qgan import ansatz as ans
from reference_qgan import backends, checkpoint, metrics, targets
from reference_qgan.discriminator import Adam, Discriminator

PROFILES: dict[str, int] = {"tiny": 20, "fast": 150, "demo": 100, "standard": 500, "full": 1000}


@dataclass
class TrainConfig:
    """Everything that defines a run; the same config and seed give the same run."""

    target: str = "lognormal"
    ansatz: str = "efficient_su2"
    reps: int | None = None
    qubits: int = 3
    epochs: int = PROFILES["standard"]
    shots: int | None = 1024          # None: exact probabilities
    seed: int = 0
    sdk: str = "qiskit"
    backend: str | None = None        # aer | statevector | sim | fake_* (Qiskit); a device name (PennyLane)
    g_lr: float = 0.01
    d_lr: float = 0.05
    d_steps: int = 5
    init_scale: float = 0.1
    loss: str = "nonsaturating"       # or "minimax": L_G = sum_k p_k log(1 - D(k))
    model: str = "qgan"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50

    @classmethod
    def profile(cls, name: str, **kw: Any) -> TrainConfig:
        if name not in PROFILES:
            from qobs.errors import ConfigError

            raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
        return cls(epochs=PROFILES[name], **kw)


@dataclass
class TrainResult:
    params: np.ndarray
    history: list[dict[str, float]]
    final: dict[str, float]             # exact divergences of the final parameters
    best: dict[str, float]              # exact divergences of the best-KL parameters (with its step)
    best_params: np.ndarray
    distribution: np.ndarray            # exact distribution of the best parameters
    target: np.ndarray
    backend: dict[str, Any]
    seconds: float
    steps: int
    calls: int
    shots: int
    samples: int
    interrupted: bool = False
    checkpoints: dict[str, str] = field(default_factory=dict)


class _NoStep:
    """Stand-in for ``qobs.training.step`` when training runs uninstrumented."""

    def __enter__(self) -> _NoStep:
        return self

    def __exit__(self, *exc: object) -> bool:
        return False

    def generator(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()

    discriminator = evaluation = generator

    def record(self, **_kw: Any) -> None:
        return None


def train(cfg: TrainConfig, *, on_step: Callable[[int, dict[str, float]], None] | None = None,
          telemetry: bool = True, backend: backends.GeneratorBackend | None = None,
          run_id: str | None = None) -> TrainResult:
    """Train the QGAN. ``KeyboardInterrupt`` saves a checkpoint, then propagates with ``.qgan_result`` set."""
    a = ans.make(cfg.ansatz, cfg.qubits, cfg.reps)
    q = targets.target(cfg.target, 2**cfg.qubits)
    enc = checkpoint.encoding(a, cfg.target)
    rng = np.random.default_rng(cfg.seed)
    n_params = a.num_params
    theta = rng.uniform(-cfg.init_scale, cfg.init_scale, n_params)
    disc = Discriminator(2**cfg.qubits, rng, lr=cfg.d_lr)
    g_opt = Adam(cfg.g_lr)
    gen = backend or backends.make(cfg.sdk, cfg.backend, a, cfg.shots, cfg.seed)
    shifts = np.vstack([np.zeros(n_params), np.eye(n_params) * (np.pi / 2), -np.eye(n_params) * (np.pi / 2)])
    if telemetry:
        from qobs import training

        def step_ctx(i: int) -> Any:
            return training.step(cfg.model, i, **{"qobs.qgan.sdk": gen.sdk, "qobs.qgan.backend": gen.name})
    else:
        def step_ctx(i: int) -> Any:
            return _NoStep()

    history: list[dict[str, float]] = []
    best = {"kl": float("inf")}
    best_params = theta.copy()
    ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    paths: dict[str, str] = {}
    config = asdict(cfg)
    shots_total = samples_total = 0
    t0 = time.perf_counter()
    done, theta_done = 0, theta.copy()  # steps fully completed, and the parameters they left

    def save(kind: str, params: np.ndarray, row: dict[str, float], at: int) -> None:
        if ckpt_dir is None:
            return
        p = checkpoint.save(ckpt_dir / f"{kind}.json", params=params, enc=enc, step=at, seed=cfg.seed,
                            metrics=row, config=config, discriminator=disc.state(), run_id=run_id, kind=kind)
        paths[kind] = str(p)

    def result(interrupted: bool) -> TrainResult:
        final = {k: v for k, v in metrics.divergences(ans.probabilities(a, theta), q).items()}
        return TrainResult(params=theta.copy(), history=history, final=final, best=dict(best),
                           best_params=best_params.copy(), distribution=ans.probabilities(a, best_params),
                           target=q, backend=gen.describe(), seconds=time.perf_counter() - t0, steps=len(history),
                           calls=gen.calls, shots=shots_total, samples=samples_total, interrupted=interrupted,
                           checkpoints=paths)

    try:
        for step in range(cfg.epochs):
            with step_ctx(step + 1) as s:  # numbered from 1, as progress lines and checkpoints count
                with s.generator():
                    probs = gen.distributions(theta + shifts)
                    p_gen = probs[0]
                    d = disc.outputs()
                    c = -np.log(d) if cfg.loss == "nonsaturating" else np.log(1 - d)
                    plus, minus = probs[1:n_params + 1], probs[n_params + 1:]
                    grad = 0.5 * (plus - minus) @ c
                    if cfg.shots:
                        # Var of a shot estimate of sum_k p_k c_k is (E[c^2] - E[c]^2) / shots.
                        var_p = np.clip(plus @ c**2 - (plus @ c) ** 2, 0, None) / cfg.shots
                        var_m = np.clip(minus @ c**2 - (minus @ c) ** 2, 0, None) / cfg.shots
                        grad_se = 0.5 * np.sqrt(var_p + var_m)
                    else:
                        grad_se = None
                    g_loss = float(p_gen @ c)
                    holder = {"theta": theta}
                    g_opt.step(holder, {"theta": grad})
                    theta = holder["theta"]
                with s.discriminator():
                    for _ in range(cfg.d_steps):
                        disc.train_step(q, p_gen)
                    d_loss = disc.loss(q, p_gen)
                with s.evaluation():
                    div = metrics.divergences(p_gen, q)
                    exact = metrics.divergences(ans.probabilities(a, theta), q)
                    entropy = metrics.entropy_bits(p_gen)
                    noise = metrics.shot_noise(p_gen, cfg.shots)
                    samples = cfg.shots or 0
                    shots_total += (cfg.shots or 0) * probs.shape[0]
                    samples_total += samples
                    s.record(g_loss=g_loss, d_loss=d_loss, grad=grad, grad_std=grad_se, divergences=div,
                             entropy=entropy, shot_noise=noise, samples=samples or None,
                             exact_kl=exact["kl"], exact_ks=exact["ks"])
            row = {"step": step + 1, "g_loss": g_loss, "d_loss": d_loss, "grad_norm": float(np.linalg.norm(grad)),
                   **div, "entropy_bits": entropy, "shot_noise": noise,
                   "exact_kl": exact["kl"], "exact_ks": exact["ks"]}
            history.append(row)
            done, theta_done = step + 1, theta.copy()  # the optimiser updates theta in place
            if exact["kl"] < best["kl"]:
                best = {**exact, "step": step + 1}
                best_params = theta.copy()
                if (step + 1) % 10 == 0 or step + 1 == cfg.epochs:
                    save("best", best_params, best, step + 1)
            if (step + 1) % cfg.checkpoint_every == 0:
                save("best", best_params, best, int(best.get("step", 0)))
                save("last", theta, exact, step + 1)
            if on_step is not None:
                on_step(step, row)
    except KeyboardInterrupt as exc:
        with contextlib.suppress(Exception):
            save("best", best_params, best, int(best.get("step", 0)))
            # A step cut short is dropped: "last" holds what `done` completed steps left.
            save("last", theta_done, metrics.divergences(ans.probabilities(a, theta_done), q), done)
        exc.qgan_result = result(True)  # type: ignore[attr-defined]
        raise
    save("best", best_params, best, int(best.get("step", 0)))
    save("last", theta, metrics.divergences(ans.probabilities(a, theta), q), cfg.epochs)
    return result(False)


def sample(doc: dict[str, Any], n: int, seed: int = 0, sdk: str = "numpy", backend: str | None = None) -> np.ndarray:
    """``n`` values drawn from a checkpoint's generator (exact distribution by default, or on an SDK)."""
    a = checkpoint.ansatz_of(doc)
    params = np.asarray(doc["params"], float)
    if sdk == "numpy":
        p = ans.probabilities(a, params)
        return np.random.default_rng(seed).choice(len(p), size=n, p=p / p.sum())
    gen = backends.make(sdk, backend, a, n, seed)
    hist = gen.distributions(params[None, :])[0]
    counts = np.rint(hist * n).astype(int)
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(hist)), counts))
