"""Prints the coverage of lmscale.fit's predictive intervals on simulated studies.

For loss (L(N) from the lower rungs of a ladder to its largest rung), accuracy (the chain
(N) -> L -> Err) and, when `lmscale.fit.simulate_pu` exists, dataset- and instance-level
PassUntil: the fraction of nominal 50/80/90% intervals that covered the simulated truth,
over --num_sims studies each, and their median width.

  PYTHONPATH=$PWD python tools/calibration.py --num_sims 200
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
    args = parser.parse_args(argv)
    rows, ok = {}, True
    for name, trial in trials().items():
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        rows[name] = calibration.coverage(trial, args.num_sims, seed=args.seed)
        ok &= calibration.within(rows[name], args.tolerance)
        print(f"{name}: {time.time() - t0:.0f}s", file=sys.stderr)
    print(calibration.table(rows))
    print(f"every cell within {args.tolerance:.2f} of nominal: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
