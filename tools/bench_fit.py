"""Benchmark of lmscale.fit's two expensive fits, each against an in-run reference.

(a) The Huber fit of Chinchilla L(N, D) on Epoch AI's 240 points from the 4,500-start
    grid (batched Gauss-Newton pass + L-BFGS-B polish, analytic gradient). Reference:
    scipy L-BFGS-B with finite-difference gradients, as Epoch's notebook, from every
    `--ref_stride`-th start, extrapolated to 4,500 starts.
(b) Instance-level PassUntil fit of 200 synthetic instances on 6 models, with 1,000
    bootstrap resamples (vectorised closed-form refits). Reference: the same bootstrap
    refitting each instance with scipy.stats.linregress in a loop, on `--ref_resamples`
    resamples, extrapolated to 1,000.

Usage: python tools/bench_fit.py [--data ../shared/data]
Goal: under 10 s each on the 2-core development machine.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import scipy.optimize
import scipy.stats

from lmscale.fit import fitters, io, laws, passuntil

EPOCH_REPLICATE = dict(E=1.8172, A=477.84, B=2143.86, alpha=0.3473, beta=0.3672)


def bench_huber(data: pathlib.Path, ref_stride: int) -> None:
    pts = io.load_chinchilla(data / "chinchilla" / "svg_extracted_data.csv")
    t0 = time.perf_counter()
    fit = fitters.fit_loss_law(pts["N"], pts["D"], pts["loss"], form="chinchilla",
                               method="huber")
    wall = time.perf_counter() - t0
    grid = fitters._grid(fitters.EPOCH_GRID, laws.FORMS["chinchilla"].theta_names)
    sub = grid[::ref_stride]
    X = laws.FORMS["chinchilla"].design(pts["N"], pts["D"])
    y = np.log(pts["loss"])
    t1 = time.perf_counter()
    best = np.inf
    for t in sub:
        with np.errstate(all="ignore"):
            res = scipy.optimize.minimize(
                lambda th: fitters.huber_objective(th[None], X, y)[0][0], t,
                method="L-BFGS-B")
        best = min(best, res.fun)
    ref = (time.perf_counter() - t1) * len(grid) / len(sub)
    p = fit.params
    print(f"(a) huber chinchilla 240 pts, {len(grid)} starts: {wall:.2f} s "
          f"(reference finite-diff L-BFGS-B, {len(sub)} starts extrapolated: {ref:.1f} s; "
          f"ratio {ref / wall:.0f}x)")
    print("    params " + ", ".join(f"{k}={p[k]:.5g}" for k in EPOCH_REPLICATE) +
          f"; objective {fit.objective:.7e} (Epoch 1.0182740e-03); subset best {best:.7e}")
    for k, v in EPOCH_REPLICATE.items():
        tol = 2e-3 * v if k in ("A", "B") else 2e-4
        if abs(p[k] - v) > tol:
            raise SystemExit(f"parameter {k}={p[k]} differs from Epoch's {v}")


def bench_instances(ref_resamples: int, num_resamples: int = 1000) -> None:
    rng = np.random.default_rng(0)
    N = np.geomspace(3e7, 1.5e9, 6)
    cs = rng.uniform(100.0, 2000.0, 200)
    alphas = rng.uniform(0.3, 0.4, 200)
    pu = rng.binomial(4000, laws.pu_law(N[:, None], cs, alphas)) / 4000
    target = np.array([2.4e9])
    t0 = time.perf_counter()
    fit = passuntil.fit_pu_instances(N, pu)
    samples, lo, hi = fit.bootstrap(target, num_resamples=num_resamples, seed=0)
    wall = time.perf_counter() - t0
    # Reference: refit each instance with linregress per resample.
    t1 = time.perf_counter()
    x = np.log(N)
    for _ in range(ref_resamples):
        idx = rng.integers(0, N.size, N.size)
        preds = []
        for i in range(pu.shape[1]):
            v = (pu[idx, i] > 0) & (pu[idx, i] < 1)
            if np.ptp(x[idx][v]) > 0:
                res = scipy.stats.linregress(x[idx][v], np.log(-np.log(pu[idx, i][v])))
                preds.append(np.exp(-np.exp(res.intercept + res.slope * np.log(target[0]))))
        np.mean(preds)
    ref = (time.perf_counter() - t1) * num_resamples / ref_resamples
    truth = laws.pu_law(target[0], cs, alphas).mean()
    print(f"(b) instance-level PU, 200 instances, {num_resamples} resamples: {wall:.2f} s "
          f"(reference linregress loop, {ref_resamples} resamples extrapolated: {ref:.1f} s; "
          f"ratio {ref / wall:.0f}x)")
    print(f"    PU(2.4B) = {fit.predict(target)[0]:.4f}, 95% band [{lo[0]:.4f}, {hi[0]:.4f}], "
          f"truth {truth:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--ref_stride", type=int, default=90,
                        help="reference (a) runs every ref_stride-th start")
    parser.add_argument("--ref_resamples", type=int, default=20)
    args = parser.parse_args()
    bench_huber(args.data, args.ref_stride)
    bench_instances(args.ref_resamples)


if __name__ == "__main__":
    main()
