"""Print the plan of a study (compute, memory, time) without training anything.

  python tools/plan_study.py --gin_file=experiments/default.gin
  python tools/plan_study.py --gin_file=experiments/default.gin \
      --prior_pu=py_import_completion:n24:c96=1e-4 --prior_pu=py_identifier_copy:n24:c96=0.05
  python tools/plan_study.py --hu2023 --num_devices=32 --device_memory_gib=32 \
      --compute_dtype=bfloat16 --prior_pu=humaneval=1e-3

--prior_pu TASK=PU[,PU...] (every rung) or TASK@RUNG=PU[,...]: per-instance prior PU (one
value stands for every instance). --hu2023 plans the paper-sized Hu et al. study (shapes
i=3..9, HumanEval 164 instances, 200 generated tokens, k_max 1e5) from stated numbers.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmscale.report import plan as plan_lib
from lmscale.report import study as study_lib  # noqa: E402
from lmscale.report.plan import core, hu2023  # noqa: E402


def _priors(items):
    out: dict = {}
    for item in items:
        key, _, values = item.rpartition("=")
        task, _, rung = key.partition("@")
        if not task or not values:
            raise SystemExit(f"--prior_pu={item!r}: expected TASK=PU or TASK@RUNG=PU")
        out.setdefault(task, {})[rung or core.ALL_RUNGS] = [float(v) for v in values.split(",")]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gin_file", action="append", default=[])
    p.add_argument("--gin_bindings", action="append", default=[])
    p.add_argument("--hu2023", action="store_true", help="the paper-sized Hu et al. study")
    p.add_argument("--num_devices", type=int, default=None)
    p.add_argument("--device_memory_gib", type=float, default=None)
    p.add_argument("--compute_dtype", default=None)
    p.add_argument("--peak_flops", type=float, default=None, help="per device, FLOP/s")
    p.add_argument("--prior_pu", action="append", default=[])
    p.add_argument("--fitted_multipliers", default=None, help="LOW,HIGH range of M")
    p.add_argument("--eval_fraction", type=float, default=0.5)
    p.add_argument("--no_jax", action="store_true", help="do not ask JAX for devices")
    p.add_argument("--probe", action="store_true", help="time a few steps per shape")
    p.add_argument("--json", default=None, help="also write the plan as JSON here")
    a = p.parse_args()
    fitted = tuple(float(x) for x in a.fitted_multipliers.split(",")) if (
        a.fitted_multipliers) else None
    thresholds = core.Thresholds(eval_fraction=a.eval_fraction, fitted_token_multipliers=fitted)
    device_bytes = a.device_memory_gib * 2 ** 30 if a.device_memory_gib else None
    common = dict(num_devices=a.num_devices, device_bytes=device_bytes,
                  compute_dtype=a.compute_dtype, peak_flops=a.peak_flops,
                  prior_pu=_priors(a.prior_pu), thresholds=thresholds, use_jax=not a.no_jax)
    if a.hu2023:
        plan = hu2023.paper_plan(**common)
        print(plan_lib.format_plan(plan), end="")
        return
    if not a.gin_file:
        raise SystemExit("--gin_file or --hu2023 is required")
    configs = study_lib.load_gin(a.gin_file, a.gin_bindings, search_path=str(REPO))
    print(plan_lib.dry_run(configs["study_config"], configs["optimizer"], configs["mesh_config"],
                           probe=a.probe, json_path=a.json, **common), end="")


if __name__ == "__main__":
    main()
