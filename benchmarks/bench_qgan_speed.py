"""Speed of the reference QGAN's Qiskit path: full profile (1000 epochs), Aer SamplerV2, 1024 shots.

The usual way (qiskit-machine-learning ``SamplerQNN`` + ``TorchConnector``) takes about 190 s for
1000 epochs here (the issue's reference figure; neither torch nor qiskit-machine-learning is a
dependency, so it is not re-run). The goal is at least 3x faster: at most about 63 s.

Both wall time and process CPU time are reported: on a shared machine wall time includes waiting
for the CPU, CPU time does not.

    OMP_NUM_THREADS=1 python benchmarks/bench_qgan_speed.py [--epochs 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
REFERENCE_S = 190.0


def main() -> int:
    from reference_qgan.train import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sdk", default="qiskit")
    ap.add_argument("--backend", default="aer")
    args = ap.parse_args()
    t0, c0 = time.perf_counter(), time.process_time()
    r = train(TrainConfig(epochs=args.epochs, seed=args.seed, sdk=args.sdk, backend=args.backend), telemetry=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    scale = 1000 / args.epochs
    print(f"{args.sdk}/{args.backend}: {args.epochs} epochs, 1024 shots, {r.calls} primitive calls "
          f"({r.shots:,} shots): {wall:.1f} s wall, {cpu:.1f} s CPU; per 1000 epochs {wall * scale:.1f} s wall, "
          f"{cpu * scale:.1f} s CPU")
    print(f"speed-up vs SamplerQNN + TorchConnector reference ({REFERENCE_S:.0f} s, not re-run here): "
          f"{REFERENCE_S / (wall * scale):.2f}x by wall time, {REFERENCE_S / (cpu * scale):.2f}x by CPU time")
    print(f"quality: final KL {r.final['kl']:.4f} KS {r.final['ks']:.4f}, best KL {r.best['kl']:.4f}")
    return 0 if REFERENCE_S / (min(wall, cpu) * scale) >= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
