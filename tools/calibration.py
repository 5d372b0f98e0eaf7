"""Prints the coverage of lmscale.fit's predictive intervals on simulated studies.

For loss (L(N) from the lower rungs of a ladder to its largest rung), accuracy (the chain
(N) -> L -> Err) and, when `lmscale.fit.simulate_pu` exists, dataset- and instance-level
PassUntil: the fraction of nominal 50/80/90% intervals that covered the simulated truth,
over --num_sims studies each, and their median width.

  PYTHONPATH=$PWD python tools/calibration.py --num_sims 200
  PYTHONPATH=$PWD python tools/calibration.py --gadre ../shared/data/gadre2024 --num_sims 0

--gadre DIR also prints Gadre et al.'s 12 targets with their 90% intervals.
"""
import argparse
import importlib
import sys
import time

from lmscale.fit import calibration, simulate


def trials() -> dict:
    out = {"loss": simulate.loss_trial, "accuracy": simulate.accuracy_trial}
    try:
        pu = importlib.import_module("lmscale.fit.simulate_pu")
    except ImportError:
        return out
    out["pu_dataset"] = pu.pu_dataset_trial
    out["pu_instance"] = pu.pu_instance_trial
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_sims", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="quantities to run (default: all)")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--gadre", help="directory with testbed.csv and tasks.csv")
    args = parser.parse_args(argv)
    if args.gadre:
        print_gadre(args.gadre)
    if args.num_sims == 0:
        return 0
    rows, ok = {}, True
    for name, trial in trials().items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        rows[name] = calibration.coverage(trial, args.num_sims, seed=args.seed)
        ok &= calibration.within(rows[name], args.tolerance)
        print(f"{name}: {time.time() - t0:.0f}s", file=sys.stderr)
        # Each row as it is done (a long run cut short keeps what it measured).
        print(calibration.table({name: rows[name]}).splitlines()[-1], file=sys.stderr,
              flush=True)
    print(calibration.table(rows))
    print(f"every cell within {args.tolerance:.2f} of nominal: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


def print_gadre(directory: str) -> None:
    from lmscale.fit import predict
    covered = 0
    print(f"{'target':32} {'quantity':8} {'predicted [low, high] (90%)':32} {'measured':>9}"
          f" {'width':>7} covered")
    for ds in ("rpj", "c4_original", "rw_original"):
        out = predict.gadre_intervals(f"{directory}/testbed.csv", f"{directory}/tasks.csv", ds)
        names = list(out["names"]) * 2
        truths = list(out["loss_true"]) + list(out["err_true"])
        for name, p, true in zip(names, out["loss_pred_int"] + out["err_pred_int"], truths):
            covered += p.covers(true)
            band = f"{p.point:.4f} [{p.low:.4f}, {p.high:.4f}]"
            print(f"{name:32} {p.quantity:8} {band:32} {true:9.4f} {p.high - p.low:7.4f} "
                  f"{'yes' if p.covers(true) else 'no'}")
    print(f"covered: {covered} of 12")


if __name__ == "__main__":
    sys.exit(main())
