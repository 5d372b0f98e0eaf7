"""PassUntil statistics and the PassUntil task law (Hu et al. 2024).

Stage: fit (pure numpy/scipy; `lmscale/eval/passuntil.py` samples and calls these).

Per instance, PassUntil draws samples until r of them pass or a cap K_max is reached
(Hu et al. section 4.1). K is the number of samples drawn (`num_samples`), r the pass
target, and the run is *capped* when it stopped at K_max with fewer than r passes.
  - stopped at the r-th pass: K - r failures ~ NegativeBinomial(r, p); (r - 1) / (K - 1)
    is the unbiased estimator of p for r >= 2 (Haldane 1945). Hu et al.'s r / K
    (`naive_estimate`) is biased upwards for small r.
  - capped: passes ~ Binomial(K_max, p); passes / K_max is unbiased.
Task law (Hu et al. eq. 4): PU(N) = exp(-c N^-alpha), i.e. F = log(-log PU) is linear in
log N with slope -alpha and intercept log c. Fits:
  - dataset level (section 4.3): average PU over instances per model, regress F on log N;
  - instance level (eq. 5): regress each instance, average the instance predictions;
  - loss-assisted (section 5.4, appendix E.2): for instances with too few non-zero PU,
    fit log PU = a + b L_answer on (instance, model) pairs having both, extrapolate each
    instance's answer loss with a power law in N, and map it to PU.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.special
import scipy.stats

from lmscale.fit import _checks
from lmscale.fit import bootstrap as bootstrap_lib
from lmscale.fit import fitters
from lmscale.fit.prediction import Prediction
from lmscale.fit.pu_counts import pu_from_counts, sample_passuntil  # noqa: F401 (re-exported)


def naive_estimate(num_samples: int, num_passes: int) -> float:
    """Hu et al.'s PU = r / K: passes over samples drawn."""
    _check_counts(num_samples, num_passes)
    return num_passes / num_samples


def estimate(num_samples: int, num_passes: int, r: int, capped: bool) -> float:
    """Unbiased PassUntil estimate of one instance's pass probability.

    Args:
      num_samples: K, samples drawn (K_max when capped).
      num_passes: passes seen (= r unless capped).
      r: the pass target the sampler stopped at.
      capped: True when sampling stopped at the cap with fewer than r passes.
    Returns:
      (r - 1) / (K - 1) when stopped at the r-th pass with r >= 2; num_passes / K when
      capped; 1 / K (with a bias warning) when stopped at the first pass (r == 1).
    Raises:
      ValueError: inconsistent counts (names the argument).
    """
    _check_counts(num_samples, num_passes)
    if r < 1:
        raise ValueError(f"r={r} must be >= 1")
    if capped:
        if num_passes >= r:
            raise ValueError(f"capped=True but num_passes={num_passes} reached r={r}")
        return num_passes / num_samples
    if num_passes != r:
        raise ValueError(f"not capped, so num_passes={num_passes} must equal r={r}")
    if r == 1:
        warnings.warn("PassUntil with r=1: 1/K is biased upwards (E[1/K] > p); use r >= 2 "
                      "for an unbiased estimate", stacklevel=2)
        return 1.0 / num_samples
    return (r - 1) / (num_samples - 1)


def interval(num_samples: int, num_passes: int, capped: bool,
             confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for one instance's pass probability.

    Stopped at the r-th pass (inverse sampling, r = num_passes): P(K <= k) =
    P(Binomial(k, p) >= r) gives lower = Beta^-1(a/2; r, k - r + 1) and upper =
    Beta^-1(1 - a/2; r, k - r) (upper = 1 when k = r). Capped: Clopper-Pearson with
    num_passes successes in num_samples trials.

    Returns:
      (lo, hi) with 0 <= lo <= hi <= 1.
    """
    _check_counts(num_samples, num_passes)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1)")
    a = 1 - confidence
    k, x = num_samples, num_passes
    if capped:
        lo = 0.0 if x == 0 else scipy.stats.beta.ppf(a / 2, x, k - x + 1)
        hi = 1.0 if x == k else scipy.stats.beta.ppf(1 - a / 2, x + 1, k - x)
        return float(lo), float(hi)
    if x < 1:
        raise ValueError("not capped, so sampling stopped at a pass: num_passes must be >= 1")
    lo = scipy.stats.beta.ppf(a / 2, x, k - x + 1)
    hi = 1.0 if k == x else scipy.stats.beta.ppf(1 - a / 2, x, k - x)
    return float(lo), float(hi)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. 2021's unbiased pass@k from n samples with c correct.

    1 - C(n - c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k / i) in log
    space so it stays exact for n in the millions.
    """
    if not 0 <= c <= n:
        raise ValueError(f"c={c} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, n={n}]")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=float)
    return float(-np.expm1(np.sum(np.log1p(-k / i))))


def dataset_pu(estimates) -> float:
    """Dataset PU: the mean of instance estimates (Hu et al. section 4.3)."""
    est = _checks.as_1d(estimates, "estimates", unit_interval="closed")
    if est.size == 0:
        raise ValueError("estimates is empty")
    return float(est.mean())


def dataset_pu_interval(estimates, confidence: float = 0.95, num_resamples: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap (over instances) percentile interval of the dataset PU."""
    est = _checks.as_1d(estimates, "estimates", unit_interval="closed")
    idx = bootstrap_lib.resample_indices(est.size, num_resamples, seed)
    return bootstrap_lib.percentile_interval(est[idx].mean(axis=1), confidence)


def pass_at_k_task(num_samples, num_passes, k: int, *, r: int, level: float = 0.9,
                   num_resamples: int = 2000, seed: int = 0) -> Prediction:
    """A task's pass@k from PassUntil samples, with a bootstrap interval over instances.

    Per instance an unbiased estimate under PassUntil's stopping rule: 1 - P(the first k
    samples all fail | counts). Stopped at the r-th pass on sample K, the r - 1 earlier
    passes sit uniformly among the first K - 1 samples, so that probability is
    C(K - 1 - k, r - 1) / C(K - 1, r - 1); capped (c < r passes in K = k_max), it is
    C(K - k, c) / C(K, c), Chen et al.'s `pass_at_k(K, c, k)`. (The indicator "the first
    k fail" is unbiased for (1 - p)^k; these are its conditional expectations.) Plain
    `pass_at_k` on a stopped run is biased upwards, like r / K. The task value is the
    mean over instances; its interval resamples instances (their spread holds each
    instance's sampling noise as well as the instance mix), so it is an interval for the
    task's pass@k (instances drawn from the task), not for these instances' mean.

    Args:
      num_samples, num_passes: [I] counts of one model; r: the PassUntil pass target.
      k: pass@k's k, 1 <= k <= the cap.
    Returns:
      A `Prediction` (quantity "pass@k", bounds (0, 1)).
    """
    K = np.asarray(num_samples, np.int64).reshape(-1)
    c = np.asarray(num_passes, np.int64).reshape(-1)
    if K.shape != c.shape or K.size == 0:
        raise ValueError(f"num_samples {K.shape} and num_passes {c.shape} must be equal, "
                         "non-empty [instances] arrays")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    vals = np.empty(K.size)
    for i in range(K.size):
        _check_counts(int(K[i]), int(c[i]))
        if c[i] < r:  # capped
            if k > K[i]:
                raise ValueError(f"k={k} exceeds the cap K={K[i]} of instance {i}")
            vals[i] = pass_at_k(int(K[i]), int(c[i]), k)
        elif c[i] == r:
            j = np.arange(r - 1)
            n = K[i] - 1
            vals[i] = 1.0 if n - k < r - 1 else -np.expm1(np.sum(np.log1p(-k / (n - j))))
        else:
            raise ValueError(f"num_passes[{i}]={c[i]} exceeds r={r}")
    idx = bootstrap_lib.resample_indices(vals.size, num_resamples, seed)
    lo, hi = bootstrap_lib.percentile_interval(vals[idx].mean(axis=1), level)
    return Prediction(quantity="pass@k", point=float(vals.mean()), low=lo, high=hi,
                      level=level, method=f"pass@{k} (Chen et al.), instance bootstrap",
                      bounds=(0.0, 1.0),
                      details=dict(k=k, num_instances=int(vals.size),
                                   num_resamples=num_resamples))


def _check_counts(num_samples, num_passes):
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be >= 1")
    if not 0 <= num_passes <= num_samples:
        raise ValueError(f"num_passes={num_passes} must lie in [0, num_samples={num_samples}]")


def _pu_matrix(N, pu, num_samples, num_passes, r):
    N = _checks.as_1d(N, "N", positive=True)
    if pu is None:
        if num_samples is None or num_passes is None or r is None:
            raise ValueError("give pu, or num_samples, num_passes and r")
        pu = pu_from_counts(num_samples, num_passes, r)
    pu = np.asarray(pu, float)
    if pu.ndim == 1:
        pu = pu[:, None]
    if pu.ndim != 2 or pu.shape[0] != N.size:
        raise ValueError(f"pu must be [models={N.size}] or [models={N.size}, instances], "
                         f"got shape {pu.shape}")
    if np.any(~np.isfinite(pu)):
        i, j = np.argwhere(~np.isfinite(pu))[0]
        raise ValueError(f"pu[{i}, {j}] = {pu[i, j]} is not finite")
    if np.any((pu < 0) | (pu > 1)):
        i, j = np.argwhere((pu < 0) | (pu > 1))[0]
        raise ValueError(f"pu[{i}, {j}] = {pu[i, j]} must lie in [0, 1]")
    return N, pu


def _F(pu):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(-np.log(pu))


@dataclasses.dataclass
class DatasetPUFit(fitters.Fit):
    """`fit_pu_dataset`'s result: a `fitters.Fit` plus predictive intervals.

    Attributes (beyond `Fit`'s):
      instances: the full-data `InstancePUFit` of the same [m, I] PU (None when only the
        dataset PU per model was given); its curves are the bootstrap's base truth.
    """
    instances: InstancePUFit | None = dataclasses.field(default=None, repr=False)
    _errors: dict = dataclasses.field(default_factory=dict, repr=False)

    def predict_interval(self, level: float = 0.9, N=None, **options):
        """Predictive interval ([n] low, [n] high) of the dataset PU measured at sizes N.

        Needs per-instance PU (an [m, I] `pu` or counts) and r, k_max; see
        `pu_predictive`. Options as `InstancePUFit.predict_interval`.
        """
        return _interval(self, "dataset", lambda n: self.predict(N=n), level, N, options)

    def prediction(self, N: float, level: float = 0.9, **options) -> Prediction:
        """The `Prediction` of the dataset PU at one size N."""
        return self.predictions(N, (level,), **options)[level]

    def predictions(self, N: float, levels=(0.5, 0.8, 0.9), **options):
        """{level: Prediction} at one size N, from one set of bootstrap samples."""
        return _predictions(self, "dataset", "dataset-level PU (Hu et al. 4.3)",
                            lambda n: self.predict(N=n), N, levels, options)


def _errors_for(fit, which, N, options):
    from lmscale.fit import pu_predictive  # local: pu_predictive imports this module
    inst = fit if which == "instance" else fit.instances
    if inst is None:
        raise ValueError("predict_interval needs per-instance PU: fit with an [m, I] pu or "
                         "with num_samples/num_passes, not the dataset PU per model")
    opts = dict(options)
    r, k_max = opts.pop("r", inst.r), opts.pop("k_max", inst.k_max)
    N = np.atleast_1d(np.asarray(N, float))
    key = (which, tuple(N.tolist()), r, k_max, tuple(sorted(opts.items())))
    if key not in fit._errors:
        fit._errors[key] = pu_predictive.predictive_errors(
            inst, N, which=which, r=r, k_max=k_max, answer_loss=inst.answer_loss, **opts)
    return fit._errors[key]


def _interval(fit, which, predict, level, N, options):
    from lmscale.fit import pu_predictive
    if N is None:
        raise ValueError("predict_interval needs N (the target sizes)")
    errors = _errors_for(fit, which, N, options)
    return pu_predictive.interval_from_errors(predict(np.atleast_1d(N)), errors, level)


def _predictions(fit, which, method, predict, N, levels, options):
    from lmscale.fit import pu_predictive
    errors = _errors_for(fit, which, [float(N)], options)
    point = float(np.asarray(predict(np.array([float(N)])))[0])
    reasons = [s for s in fit.reason.split("; ") if s]
    if errors.seed_sd_source == "unavailable":
        reasons.append("training noise not estimable (no instance fitted on >= 3 rungs); "
                       "left out of the interval")
    bad = int(np.isnan(errors.log_ratio[:, 0]).sum())
    if bad > 0.05 * errors.log_ratio.shape[0]:
        reasons.append(f"{bad} of {errors.log_ratio.shape[0]} bootstrap resamples predicted "
                       "or measured PU 0 or failed to fit")
    out = {}
    for level in levels:
        lo, hi = pu_predictive.interval_from_errors([point], errors, level)
        raw = pu_predictive.interval_from_errors([point], errors, level, hold_point=False)
        extra = []
        if (raw[0][0], raw[1][0]) != (lo[0], hi[0]):
            extra = [f"the bootstrap finds this fit biased against the instance curves: "
                     f"its bias-corrected interval [{raw[0][0]:.4g}, {raw[1][0]:.4g}] "
                     f"leaves the point out, so it was widened to hold it"]
        out[level] = Prediction(
            quantity="pu", point=point, low=lo[0], high=hi[0], level=level, method=method,
            reasons=tuple(reasons + extra), bounds=(0.0, 1.0),
            details=dict(N=float(N), seed_sd=errors.seed_sd,
                         seed_sd_source=errors.seed_sd_source,
                         num_resamples=int(errors.log_ratio.shape[0]),
                         num_failed=errors.num_failed))
    return out


def fit_pu_dataset(N, pu=None, *, num_samples=None, num_passes=None, r: int | None = None,
                   k_max: int | None = None, answer_loss=None) -> DatasetPUFit:
    """Dataset-level fit of PU(N) = exp(-c N^-alpha) (Hu et al. section 4.3).

    Args:
      N: [m] model sizes.
      pu: [m] dataset PU or [m, I] per-instance PU (averaged over instances per model).
      num_samples, num_passes: alternatively [m, I] counts, with the sampler's r.
      r: the PassUntil pass target (with counts; with pu, needed for intervals).
      k_max: the PassUntil cap (for `predict_interval`).
      answer_loss: optional [m, I] answer loss (summed over the answer's tokens), used by
        the interval's instance-level base truth for instances without passes.
    Returns:
      A `DatasetPUFit` (a `fitters.Fit`, law "passuntil", method "ols") with params c, alpha,
      `.predict(N=...)` -> PU, and details slope/intercept/stderr/rvalue. Models whose
      dataset PU is 0 or 1 have no finite log(-log PU); they are dropped and the fit is
      flagged unreliable with their indices.
    Raises:
      ValueError: fewer than 2 models with 0 < PU < 1, or bad inputs.
    """
    N, pu = _pu_matrix(N, pu, num_samples, num_passes, r)
    instances = None
    if pu.shape[1] > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                instances = fit_pu_instances(N, pu, r=r, k_max=k_max, answer_loss=answer_loss)
            except ValueError:  # answer loss unusable: base truth without it
                instances = fit_pu_instances(N, pu, r=r, k_max=k_max)
    mean = pu.mean(axis=1)
    ok = (mean > 0) & (mean < 1)
    if ok.sum() < 2:
        raise ValueError(f"fit_pu_dataset: {ok.sum()} models have 0 < PU < 1; need >= 2 "
                         f"(dataset PU per model: {np.round(mean, 6).tolist()})")
    x, y = np.log(N[ok]), _F(mean[ok])
    res = scipy.stats.linregress(x, y)
    fit = DatasetPUFit(law="passuntil", method="ols",
                      params=dict(c=float(np.exp(res.intercept)), alpha=float(-res.slope)),
                      objective=float(np.sum((res.intercept + res.slope * x - y) ** 2)),
                      num_points=int(ok.sum()),
                      data=dict(N=N[ok], pu=mean[ok]),
                      details=dict(slope=res.slope, intercept=res.intercept,
                                   stderr=res.stderr, rvalue=res.rvalue),
                      _predict=lambda p, N: np.exp(-p["c"] * np.asarray(N, float) ** -p["alpha"]),
                      _refit=lambda idx: fit_pu_dataset(N[ok][idx], mean[ok][idx]),
                      instances=instances)
    if not ok.all():
        fit._flag(f"models {np.flatnonzero(~ok).tolist()} have dataset PU of 0 or 1 and were "
                  "left out")
    if ok.sum() == 2:
        fit._flag("2 points for 2 parameters: no residual degrees of freedom")
    if res.slope >= 0:
        fit._flag("PU does not rise with N (alpha <= 0)")
    return fit


@dataclasses.dataclass
class InstancePUFit:
    """Instance-level PassUntil fit (Hu et al. eq. 5).

    Attributes:
      N: [m] model sizes fitted.
      pu: [m, I] per-instance PU fitted.
      intercept: [I] log c_s (NaN where the instance has no own fit).
      slope: [I] -alpha_s.
      status: [I] "fit" (>= 2 points with 0 < PU < 1), "saturated" (PU = 1 at the
        largest model, too few points otherwise: predicted 1), "loss_assisted", or
        "none" (no passes and no loss given: predicted 0).
      loss_map: (a, b) of log PU = a + b L_answer, when loss-assisted.
      loss_intercept, loss_slope: [I] power law log L_answer = u + v log N per instance.
      reliable, reason: as `Fit`.
    """
    N: np.ndarray
    pu: np.ndarray
    intercept: np.ndarray
    slope: np.ndarray
    status: np.ndarray
    loss_map: tuple[float, float] | None = None
    loss_intercept: np.ndarray | None = None
    loss_slope: np.ndarray | None = None
    reliable: bool = True
    reason: str = ""
    r: int | None = None
    k_max: int | None = None
    answer_loss: np.ndarray | None = dataclasses.field(default=None, repr=False)
    loss_mode: str = "missing"
    _errors: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Per-instance c [I] and alpha [I] (NaN where not fitted)."""
        return dict(c=np.exp(self.intercept), alpha=-self.slope)

    def predict_instances(self, N) -> np.ndarray:
        """[n, I] predicted PU of each instance at sizes N [n]."""
        logN = np.log(np.atleast_1d(np.asarray(N, float)))[:, None]
        out = np.zeros((logN.shape[0], self.status.size))
        own = self.status == "fit"
        out[:, own] = np.exp(-np.exp(self.intercept[own] + self.slope[own] * logN))
        out[:, self.status == "saturated"] = 1.0
        la = self.status == "loss_assisted"
        if la.any():
            loss = np.exp(self.loss_intercept[la] + self.loss_slope[la] * logN)
            a, b = self.loss_map
            out[:, la] = np.clip(np.exp(a + b * loss), 0.0, 1.0)
        return out

    def predict(self, N) -> np.ndarray:
        """[n] dataset PU at sizes N: the mean of instance predictions (Hu et al. eq. 5)."""
        return self.predict_instances(N).mean(axis=1)

    def predict_interval(self, level: float = 0.9, N=None, **options):
        """Predictive interval ([n] low, [n] high) of the dataset PU measured at sizes N.

        See `pu_predictive` (parametric bootstrap of the error over resampled
        instances, the study's r and cap, training noise, the target's measurement).
        Options: target_k_max, seed_sd, num_resamples (1000), resample_instances, seed,
        r and k_max (default: those given to the fit).
        """
        return _interval(self, "instance", self.predict, level, N, options)

    def prediction(self, N: float, level: float = 0.9, **options) -> Prediction:
        """The `Prediction` (point, interval, reasons) of the dataset PU at one size N."""
        return self.predictions(N, (level,), **options)[level]

    def predictions(self, N: float, levels=(0.5, 0.8, 0.9), **options):
        """{level: Prediction} at one size N, from one set of bootstrap samples."""
        return _predictions(self, "instance", "instance-level PU (Hu et al. eq. 5)",
                            self.predict, N, levels, options)

    def bootstrap(self, N, num_resamples: int = 1000, seed: int = 0,
                  confidence: float = 0.95):
        """Bootstrap band of the predicted dataset PU at sizes N [n] (legacy).

        Not a predictive interval: it leaves out the target's measurement and training
        noise and resamples the 5-6 models too; use `predict_interval`. Each resample draws models (with replacement, the same models for every
        instance, since they are the same checkpoints) and instances (with
        replacement), refits every instance's line in closed form, vectorised over
        resamples and instances. An instance left with < 2 distinct usable models keeps
        its full-data prediction; loss-assisted, saturated and empty instances keep
        theirs.

        Returns:
          (samples [B, n], lo [n], hi [n]).
        """
        N = np.atleast_1d(np.asarray(N, float))
        m, I = self.pu.shape
        rng = np.random.default_rng(seed)
        model_idx = rng.integers(0, m, size=(num_resamples, m))
        counts = np.stack([np.bincount(row, minlength=m) for row in model_idx]).astype(float)
        valid = ((self.pu > 0) & (self.pu < 1)).T.astype(float)             # [I, m]
        x = np.log(self.N)
        y = np.where(valid > 0, _F(np.clip(self.pu, 1e-300, 1 - 1e-16)).T, 0.0)
        w = counts[:, None, :] * valid[None]                                   # [B, I, m]
        sw = w.sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            xm = (w * x).sum(-1) / sw
            ym = (w * y).sum(-1) / sw
            sxx = (w * (x - xm[..., None]) ** 2).sum(-1)
            slope = (w * (x - xm[..., None]) * (y - ym[..., None])).sum(-1) / sxx
            intercept = ym - slope * xm
        base = self.predict_instances(N)                                       # [n, I]
        good = (sxx > 1e-12) & (self.status == "fit")[None]
        Fp = intercept[..., None] + slope[..., None] * np.log(N)               # [B, I, n]
        with np.errstate(over="ignore"):
            pred = np.where(good[..., None], np.exp(-np.exp(Fp)), base.T[None])
        inst_idx = rng.integers(0, I, size=(num_resamples, I))
        samples = np.take_along_axis(pred, inst_idx[..., None], axis=1).mean(axis=1)
        lo, hi = bootstrap_lib.percentile_interval(samples, confidence, axis=0)
        return samples, lo, hi


def fit_pu_instances(N, pu=None, *, num_samples=None, num_passes=None, r: int | None = None,
                     answer_loss=None, loss_assisted: str = "missing",
                     k_max: int | None = None) -> InstancePUFit:
    """Instance-level fit (Hu et al. eq. 5), optionally loss-assisted (appendix E.2).

    Args:
      N: [m] model sizes.
      pu: [m, I] per-instance PU; or num_samples, num_passes [m, I] with r.
      answer_loss: optional [m, I] loss of the ground-truth answer (nats, summed over
        its tokens) per model and instance, for loss-assisted PU.
      loss_assisted: "missing" (only instances with < 2 usable PU points, as Hu et al.)
        or "all" (every instance goes through its answer loss).
      k_max: the PassUntil cap (with r, what `predict_interval` simulates).
    Returns:
      An `InstancePUFit`; `.predict(N)` gives the dataset PU.
    Raises:
      ValueError: bad shapes or values; answer_loss needed but no (instance, model) pair
        has both a loss and 0 < PU < 1.
    """
    N, pu = _pu_matrix(N, pu, num_samples, num_passes, r)
    if loss_assisted not in ("missing", "all"):
        raise ValueError(f"loss_assisted={loss_assisted!r}; allowed: 'missing', 'all'")
    m, I = pu.shape
    x = np.log(N)
    valid = (pu > 0) & (pu < 1)
    intercept, slope = np.full(I, np.nan), np.full(I, np.nan)
    status = np.empty(I, dtype=object)
    for i in range(I):
        v = valid[:, i]
        if v.sum() >= 2 and np.ptp(x[v]) > 0 and loss_assisted != "all":
            res = scipy.stats.linregress(x[v], _F(pu[v, i]))
            intercept[i], slope[i], status[i] = res.intercept, res.slope, "fit"
        elif pu[np.argmax(N), i] == 1.0 and loss_assisted != "all":
            status[i] = "saturated"
        else:
            status[i] = "none"
    fit = InstancePUFit(N=N, pu=pu, intercept=intercept, slope=slope, status=status, r=r,
                        k_max=k_max, loss_mode=loss_assisted)
    if answer_loss is not None:
        _attach_loss_assist(fit, answer_loss)
        fit.answer_loss = np.asarray(answer_loss, float)
    none = np.flatnonzero(fit.status == "none")
    if none.size:
        fit.reliable = False
        fit.reason = (f"instances {none.tolist()[:20]} have < 2 usable PU points and no "
                      "answer loss: predicted 0")
    rising = fit.slope[fit.status == "fit"]
    if np.any(rising >= 0):
        fit.reliable = False
        fit.reason = "; ".join(s for s in (fit.reason, "some instances' PU falls with N") if s)
    return fit


def _attach_loss_assist(fit: InstancePUFit, answer_loss) -> None:
    loss = np.asarray(answer_loss, float)
    if loss.shape != fit.pu.shape:
        raise ValueError(f"answer_loss shape {loss.shape} != pu shape {fit.pu.shape}")
    if np.any(loss <= 0) or np.any(~np.isfinite(loss)):
        raise ValueError("answer_loss must be finite and > 0 everywhere")
    both = (fit.pu > 0) & (fit.pu < 1)
    if both.sum() < 2:
        raise ValueError("loss-assisted PU: need >= 2 (model, instance) pairs with "
                         "0 < PU < 1 to fit log PU against answer loss")
    res = scipy.stats.linregress(loss[both], np.log(fit.pu[both]))
    fit.loss_map = (float(res.intercept), float(res.slope))
    x = np.log(fit.N)
    u = np.full(fit.status.size, np.nan)
    v = np.full(fit.status.size, np.nan)
    todo = np.flatnonzero(fit.status == "none")
    for i in todo:
        lr = scipy.stats.linregress(x, np.log(loss[:, i]))
        u[i], v[i] = lr.intercept, lr.slope
    fit.loss_intercept, fit.loss_slope = u, v
    fit.status[todo] = "loss_assisted"
