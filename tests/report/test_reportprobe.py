"""The fit/report probe's stand-in rows look like a real default-study ladder."""
import numpy as np

from lmscale.eval import results as R
from lmscale.report import study as study_lib
from lmscale.report.plan import adapter, reportprobe


def _stand_in():
    cfg = study_lib.load_gin(["experiments/default.gin"], search_path=".")["study_config"]
    plan = adapter.plan_study_config(cfg, use_jax=False)
    return cfg, reportprobe.stand_in_study(cfg, {t.name: t.instances for t in plan.tasks})


def test_stand_in_losses_and_pu_in_the_measured_range():
    cfg, (infos, rows) = _stand_in()
    assert len(infos) == len(cfg.specs())
    loss = np.array([r.value for r in rows if r.task == R.VALIDATION_TASK
                     and r.metric == R.VALIDATION_LOSS])
    # The default study measured 2.85 (w32, first checkpoint) .. 1.58 (w96, final).
    assert 2.4 < loss.max() < 3.3 and 1.35 < loss.min() < 1.8
    capped = [r.value for r in rows if r.metric == R.PASSUNTIL_CAPPED]
    # Measured capped fraction 0.86 .. 0.50 on final checkpoints: most instances capped
    # on the small rungs, not none.
    assert max(capped) > 0.5 and min(capped) < 0.8
