"""Synthetic result rows of an over-training grid with known laws (no training).

Loss follows Gadre et al.'s L(C, M) at every checkpoint (M = tokens / N, N total);
each MC question is answered correctly with probability acc(L) = rb + (1 - rb) *
min(1, S * max(0, ETA - L)) (Du et al.'s threshold), and the per-question scorer detail
is written so CorrectChoiceProb and Brier are recomputed exactly as the runner does.
"""

import numpy as np

E, A, B, ETA_LAW = 1.2, 60.0, 40.0, 0.16  # L(C, M) = E + (a M^eta + b M^-eta) C^-eta
THRESH_ETA, THRESH_S = 3.3, 0.9  # normalised accuracy = S (ETA - L) below ETA
EMB_FRACTION = 0.3  # embedding share of the total N
STEPS = 3


def law(C, M):
    return E + (A * M ** ETA_LAW + B * M ** -ETA_LAW) * C ** -ETA_LAW


def acc_of(loss, rb=0.25):
    return rb + (1 - rb) * np.clip(THRESH_S * np.maximum(THRESH_ETA - loss, 0.0), 0.0, 1.0)


def grid(sizes=(20_000, 40_000, 80_000, 160_000), mults=(5, 10, 20, 40)):
    """Run records (dicts as run.json) of every (N total, M)."""
    runs = {}
    for n in sizes:
        for m in mults:
            d = int(m * n)
            runs[f"n{n}_M{m}_s0"] = dict(num_params=n,
                                          num_params_non_embedding=int(n * (1 - EMB_FRACTION)),
                                          num_tokens=d, num_steps=STEPS,
                                          tokens_per_step=d // STEPS)
    return runs


def _detail(correct, rng):
    ll = np.array([-1.5, -1.5, -1.5, -1.5]) + rng.normal(0, 0.05, 4)
    gold = int(rng.integers(4))
    if correct:
        ll[gold] = -1.0
    else:
        ll[(gold + 1) % 4] = -1.0
    return dict(loglik=ll.tolist(), num_tokens=[3] * 4, num_chars=[5] * 4,
                num_bytes=[5] * 4, greedy=[False] * 4, gold=gold)


def rows(runs, tasks=("mc_a", "mc_b"), questions=60, noise=0.002, seed=0, instances=True):
    """Result rows (dicts) for every checkpoint of `runs`."""
    from lmscale.eval import scorer

    rng = np.random.default_rng(seed)
    out = []
    for run, info in runs.items():
        n = info["num_params"]
        for step in range(1, info["num_steps"] + 1):
            tokens = step * info["tokens_per_step"]
            base = dict(run=run, step=step, tokens=tokens, num_params=n,
                        num_params_non_embedding=info["num_params_non_embedding"],
                        num_tokens=info["num_tokens"], flops=6.0 * n * tokens,
                        instance=None, detail=None)
            loss = float(law(6.0 * n * tokens, tokens / n) * np.exp(rng.normal(0, noise)))
            out.append(dict(base, task="validation", metric="validation_loss", value=loss))
            for t, task in enumerate(tasks):
                p = acc_of(loss + 0.05 * t)
                dets = [_detail(rng.random() < p, rng) for _ in range(questions)]
                per = [scorer.QuestionScore.from_detail(str(i), d).metrics()
                       for i, d in enumerate(dets)]
                for metric in ("accuracy", "correct_choice_prob", "brier_score"):
                    out.append(dict(base, task=task, metric=metric,
                                    value=float(np.mean([q[metric] for q in per]))))
                out.append(dict(base, task=task, metric="num_instances", value=questions))
                if instances:
                    out += [dict(base, task=task, metric="instance", value=d["loglik"][d["gold"]],
                                 instance=str(i), detail=d) for i, d in enumerate(dets)]
    return out
