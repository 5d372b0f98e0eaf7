"""Synthetic ladders with known true laws and realistic noise, for calibration.

Stage: fit. Produces ladders (sizes, tokens, measured losses, measured errors) drawn from
a known Kaplan loss law and Gadre et al.'s error law, with the noise a real study has:
each run's loss deviates from the law by a multiplicative seed-to-seed noise, cheap rungs
may have extra seeds, and each error is measured on a finite question set (binomial).
`loss_trial` and `accuracy_trial` are trials for `calibration.coverage`: they fit the
ladder's lower rungs and predict the largest one.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from lmscale.fit import bootstrap, fitters, laws

LEVELS = (0.5, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class LadderSpec:
    """A simulated study.

    Attributes:
      sizes: N per rung (the last one is held out as the target).
      tokens_per_param: D = M N.
      loss_law: Kaplan (L_inf, N0, alpha).
      err_law: Gadre (eps, k, gamma).
      loss_noise: sd of log loss from run to run (seed noise).
      num_questions: questions per error measurement.
      extra_seeds: extra seeds of each of the cheapest rungs (0 for one seed per rung).
      num_resamples: bootstrap resamples per prediction.
    """
    sizes: tuple = tuple(np.geomspace(1e7, 1e9, 7))
    tokens_per_param: float = 20.0
    loss_law: tuple = (2.0, 2e6, 0.3)
    err_law: tuple = (0.86, 2.2, 0.71)
    loss_noise: float = 0.01
    num_questions: int = 1000
    extra_seeds: int = 2
    num_resamples: int = 100


def ladder(rng: np.random.Generator, spec: LadderSpec = LadderSpec()) -> dict:
    """One simulated ladder: dict of [n] arrays N, D, loss, err and num_questions.

    Rungs are in size order; the cheapest two rungs get `extra_seeds` extra runs each.
    """
    N = np.asarray(spec.sizes, float)
    if spec.extra_seeds:
        N = np.concatenate([N, np.repeat(N[:2], spec.extra_seeds)])
    N = np.sort(N)
    true_loss = laws.kaplan(N, *spec.loss_law)
    loss = true_loss * np.exp(spec.loss_noise * rng.standard_normal(N.size))
    # The model's error follows its own (actual) loss; the measurement is binomial.
    p_err = np.clip(laws.error_law(loss, *spec.err_law), 0.0, 1.0)
    err = rng.binomial(spec.num_questions, p_err) / spec.num_questions
    return dict(N=N, D=spec.tokens_per_param * N, loss=loss, err=err,
                num_questions=np.full(N.size, float(spec.num_questions)))


def _split(data: dict):
    target = data["N"] == data["N"].max()
    return ~target, np.flatnonzero(target)[:1]


def loss_trial(rng: np.random.Generator, spec: LadderSpec = LadderSpec(),
               levels=LEVELS):
    """Fits L(N) on the lower rungs and predicts the held-out largest rung's loss.

    Returns:
      (the target's measured loss, {level: Prediction}).
    """
    data = ladder(rng, spec)
    fit_rows, tgt = _split(data)
    lf = fitters.fit_loss_law(data["N"][fit_rows], None, data["loss"][fit_rows],
                              form="kaplan")
    seed = int(rng.integers(2 ** 31))
    by_level = bootstrap.predictive(lf, tuple(levels), spec.num_resamples, seed,
                                    N=data["N"][tgt])
    preds = {lv: p[0] for lv, p in by_level.items()}
    return float(data["loss"][tgt][0]), preds


def accuracy_trial(rng: np.random.Generator, spec: LadderSpec = LadderSpec(),
                   levels=LEVELS):
    """Chains L(N) -> Err(L) from the lower rungs to the largest rung's accuracy.

    Returns:
      (the target's measured accuracy, {level: Prediction of accuracy}).
    """
    data = ladder(rng, spec)
    fit_rows, tgt = _split(data)
    lf = fitters.fit_loss_law(data["N"][fit_rows], None, data["loss"][fit_rows],
                              form="kaplan")
    ef = fitters.fit_error_law(data["loss"][fit_rows], data["err"][fit_rows],
                               num_questions=data["num_questions"][fit_rows])
    seed = int(rng.integers(2 ** 31))
    _, err = bootstrap.predictive_chain(lf, ef, tuple(levels), spec.num_resamples, seed,
                                        N=data["N"][tgt])
    preds = {lv: to_accuracy(p[0]) for lv, p in err.items()}
    return 1.0 - float(data["err"][tgt][0]), preds


def to_accuracy(pred):
    """An error `Prediction` as an accuracy `Prediction` (1 - error, interval flipped)."""
    return dataclasses.replace(pred, quantity="accuracy", point=1 - pred.point,
                               low=1 - pred.high, high=1 - pred.low)
