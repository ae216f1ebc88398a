"""Quality of the reference QGAN: standard (500 epochs) and full (1000 epochs) profiles, 3 seeds each.

Qiskit Aer ``SamplerV2``, 1024 shots, uninstrumented. Figures are the exact distribution of the
parameters (3-qubit statevector) against the target. Gate (standard): final KL <= 0.10 and KS <= 0.10
for every seed. Target (full): best-checkpoint KL <= 0.039 and KS <= 0.061 for every seed (stretch KL <= 0.01).

    OMP_NUM_THREADS=1 python benchmarks/bench_qgan_quality.py [--sdk qiskit] [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> int:
    from reference_qgan.train import TrainConfig, train

    ap = argparse.ArgumentParser()
    ap.add_argument("--sdk", default="qiskit")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--profiles", nargs="+", default=["standard", "full"])
    ap.add_argument("--json")
    args = ap.parse_args()
    rows, ok = [], True
    for profile in args.profiles:
        for seed in args.seeds:
            t0, c0 = time.perf_counter(), time.process_time()
            r = train(TrainConfig.profile(profile, seed=seed, sdk=args.sdk, backend=args.backend), telemetry=False)
            row = {"profile": profile, "seed": seed, "final_kl": r.final["kl"], "final_ks": r.final["ks"],
                   "best_kl": r.best["kl"], "best_ks": r.best["ks"], "best_step": r.best.get("step"),
                   "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
            if profile == "full":
                passed = row["best_kl"] <= 0.039 and row["best_ks"] <= 0.061
            else:
                passed = row["final_kl"] <= 0.10 and row["final_ks"] <= 0.10
            ok &= passed
            row["pass"] = passed
            rows.append(row)
            print(f"{profile:<8} seed {seed}: final KL {row['final_kl']:.4f} KS {row['final_ks']:.4f} | "
                  f"best KL {row['best_kl']:.4f} KS {row['best_ks']:.4f} (step {row['best_step']}) | "
                  f"{row['wall_s']:.1f} s wall, {row['cpu_s']:.1f} s CPU | {'PASS' if passed else 'FAIL'}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    print("all pass" if ok else "SOME FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
