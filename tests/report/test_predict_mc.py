"""The per-task accuracy method choice (Gadre et al.'s chain vs Bhagia et al.'s two-step)."""
import types

import numpy as np

from lmscale import fit as F
from lmscale.report import analysis, predict_mc


def _points():
    N = np.array([1e4, 2e4, 4e4, 8e4, 1.6e5])
    return dict(N=N, D=10 * N, loss=2.0 - 0.1 * np.log(N / 1e4),
                task_loss=3.0 - 0.2 * np.log(N / 1e4), acc=np.linspace(0.3, 0.5, 5),
                final=np.ones(5, bool))


def _gadre():
    return [F.Prediction(quantity="accuracy", point=0.55, low=0.4, high=0.7)]


def _fake_two_step(params):
    fit = types.SimpleNamespace(loss_fit=types.SimpleNamespace(params=params),
                                acc_fit=types.SimpleNamespace(params=dict(a=0.7, k=1.0,
                                                                          L0=2.0, b=0.25)))
    fit.predictions = lambda *a, **k: [F.Prediction(quantity="accuracy", point=0.28, low=0.0,
                                                    high=1.0)]
    return fit


def test_a_degenerate_two_step_fit_keeps_gadres_chain(monkeypatch):
    monkeypatch.setattr(predict_mc.taskloss, "choose_accuracy_method", lambda *a, **k: dict(
        choice=predict_mc.TWO_STEP, backtest_error={"two_step": 0.01, "gadre": 0.05},
        failures={}))
    settings = analysis.Settings(level=0.9, num_resamples=10, seed=0)
    # N0 = inf: the task-loss law does not extrapolate, so the backtest's winner is refused.
    monkeypatch.setattr(predict_mc.taskloss, "fit_two_step",
                        lambda *a, **k: _fake_two_step(dict(E=0.0, N0=float("inf"), alpha=0.3)))
    info, preds = predict_mc.choose_accuracy(_points(), [(3e5, 3e6)], _gadre(), settings)
    assert info["choice"] == predict_mc.GADRE and preds[0].point == 0.55
    assert "N0=inf" in info["failures"][predict_mc.TWO_STEP] and "degenerate" in info["reason"]
    # A finite two-step fit with the smaller backtest error is used.
    monkeypatch.setattr(predict_mc.taskloss, "fit_two_step",
                        lambda *a, **k: _fake_two_step(dict(E=1.0, N0=5e4, alpha=0.3)))
    info, preds = predict_mc.choose_accuracy(_points(), [(3e5, 3e6)], _gadre(), settings)
    assert info["choice"] == predict_mc.TWO_STEP and preds[0].point == 0.28


def test_a_two_step_fit_whose_bootstrap_all_failed_keeps_gadres_chain(monkeypatch):
    # The default study (seed 0): finite parameters would pass the check above, but 200 of
    # 200 refits failed ("loss[0] = inf is not finite") and the interval was [0, 1].
    monkeypatch.setattr(predict_mc.taskloss, "choose_accuracy_method", lambda *a, **k: dict(
        choice=predict_mc.TWO_STEP, backtest_error={"two_step": 0.01, "gadre": 0.05},
        failures={}))
    settings = analysis.Settings(level=0.9, num_resamples=10, seed=0)
    fake = _fake_two_step(dict(E=1.0, N0=5e4, alpha=0.3))
    why = "200 of 200 bootstrap refits failed (most common, 200x: ValueError: loss[0] = inf)"
    fake.predictions = lambda *a, **k: [F.Prediction(
        quantity="accuracy", point=0.28, low=0.0, high=1.0, reasons=(why,),
        details=dict(num_resamples=200, num_failed=200))]
    monkeypatch.setattr(predict_mc.taskloss, "fit_two_step", lambda *a, **k: fake)
    info, preds = predict_mc.choose_accuracy(_points(), [(3e5, 3e6)], _gadre(), settings)
    assert info["choice"] == predict_mc.GADRE and preds[0].point == 0.55
    assert "no interval" in info["failures"][predict_mc.TWO_STEP]
    assert "200 of 200" in info["failures"][predict_mc.TWO_STEP]
    assert "all of [0, 1]" in info["reason"]
    # Two successful refits give an interval: that prediction is used.
    fake.predictions = lambda *a, **k: [F.Prediction(
        quantity="accuracy", point=0.28, low=0.2, high=0.36,
        details=dict(num_resamples=200, num_failed=198))]
    info, preds = predict_mc.choose_accuracy(_points(), [(3e5, 3e6)], _gadre(), settings)
    assert info["choice"] == predict_mc.TWO_STEP and preds[0].point == 0.28
