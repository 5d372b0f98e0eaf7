"""lmscale.fit: scaling laws of Hu et al., Gadre et al. and Du et al., fitted from data.

Imports numpy and scipy only (matplotlib inside the plotting functions), so a notebook
can use it on any CSV, dict of arrays or pandas DataFrame. See docs/fit.md.

Modules: laws (the law functions), fitters (LM and Huber fits, error law, chaining),
bootstrap (intervals), passuntil (PU statistics and task-law fits), growth (growth
classes, two-circuit fit), threshold (Du et al. loss threshold), predict (relative
error, search-filter-fit, compute-reliability, Gadre Table 1), prediction (the
`Prediction` type: point, interval, level, method, caveats), select (loss-law choice by
backtest), taskloss (Bhagia et al.'s two-step accuracy), simulate and calibration
(coverage of the predictive intervals on synthetic ladders), plots, io.
"""
from lmscale.fit.bootstrap import (Bootstrap, bootstrap_fit, percentile_interval, predictive,
                                   predictive_chain)
from lmscale.fit.calibration import coverage
from lmscale.fit.fitters import (EPOCH_GRID, GADRE_GRID, Fit, fit_error_law, fit_loss_law,
                                 fit_loss_law_exhaustive, huber_objective, predict_chain)
from lmscale.fit.growth import Growth, classify_growth, fit_two_circuit
from lmscale.fit.io import as_table, load_chinchilla, load_gadre_testbed, read_csv, read_jsonl
from lmscale.fit.laws import (FORMS, chinchilla, compute_law, error_law, kaplan, overtrain,
                              pu_law, two_circuit_F)
from lmscale.fit.passuntil import (DatasetPUFit, InstancePUFit, pass_at_k_task, sample_passuntil, dataset_pu, dataset_pu_interval, estimate,
                                   fit_pu_dataset, fit_pu_instances, interval, naive_estimate,
                                   pass_at_k, pu_from_counts)
from lmscale.fit.plots import (plot_loss_vs_compute, plot_performance_vs_loss,
                               plot_prediction_vs_truth, plot_pu_scaling)
from lmscale.fit.prediction import Prediction
from lmscale.fit.predict import (compute_reliability, fit_compute_law, gadre_default_fit,
                                 gadre_effective_questions, gadre_intervals, pareto_frontier,
                                 relative_error, search_filter_fit)
from lmscale.fit.select import Choice, choose_loss_law, fit_kaplan_floor
from lmscale.fit.taskloss import TwoStepFit, choose_accuracy_method, fit_sigmoid, fit_two_step
from lmscale.fit.threshold import (correlations, fit_loss_threshold, normalize_performance,
                                   size_threshold, threshold_curve)
