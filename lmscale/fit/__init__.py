"""lmscale.fit: scaling laws of Hu et al., Gadre et al. and Du et al., fitted from data.

Imports numpy and scipy only (matplotlib inside the plotting functions), so a notebook
can use it on any CSV. See docs/fit.md for a walkthrough.
"""
from lmscale.fit.fitters import Fit, fit_error_law, fit_loss_law, predict_chain
from lmscale.fit.passuntil import (InstancePUFit, dataset_pu, dataset_pu_interval, estimate,
                                   fit_pu_dataset, fit_pu_instances, interval, naive_estimate,
                                   pass_at_k, pu_from_counts)
