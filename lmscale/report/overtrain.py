"""Gadre et al.'s over-training study: sizes x token multipliers, L(C, M), chained Err(L).

Stage: report. `OvertrainConfig` names a grid of (model, M) runs; `run_overtrain` trains the
runs not yet done (`lmscale.train.loop.train`, one run per (model, M, seed), keyed by
(N, D, seed)), evaluates every kept checkpoint (`lmscale.eval.runner.evaluate`: validation
loss and multiple-choice tasks by likelihood), then `analyze_overtrain`:

1. fits L(C, M) = E + (a M^eta + b M^-eta) C^-eta (Gadre et al. eq. 4, Levenberg-Marquardt)
   on the cheap runs: those with C <= `fit_max_flops` (default: Gadre et al.'s Table 1 set,
   `gadre_fit_set`);
2. fits Err(L) = eps - k exp(-gamma L) (eq. 5) per task and for the task average on the
   same runs (measured loss -> measured top-1 error);
3. chains (C, M) -> L -> Err for every run above the cutoff (trained, measured, held out)
   and every never-trained `predict` target, with predictive intervals
   (`lmscale.fit.predictive_chain`), the relative error and whether the interval covered.

M and C are counted as the paper counts them, from all parameters (N = `num_params`,
D = M N, C = 6 N D) by default; `counting="non_embedding"` uses Kaplan et al.'s N
instead (the library's `RunRecord.flops`). At the CPU ladder's smallest width the two N
are ~1.35x apart (byte vocabulary), at GPT-2's vocabulary several-fold.

Beside it, `lmscale.report.lossview` reports Du et al.'s loss view of the same checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from lmscale import fit as F
from lmscale.eval import results as results_lib
from lmscale.eval import runner
from lmscale.models import ConfigError, ModelConfig
from lmscale.report.analysis import backtest_summary
from lmscale.train import optim
from lmscale.train import record as record_lib
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib
from lmscale.train import loop as train_loop

COUNTINGS = ("total", "non_embedding")


@dataclasses.dataclass(frozen=True)
class OvertrainConfig:
    """What the over-training study trains, measures and predicts.

    Attributes:
      name: study title (report heading).
      models: the ladder's models (one shape family), smallest first.
      token_multipliers: the M grid (Gadre et al.: 5 .. 640).
      runs: the (model, M) pairs trained, as "model_name:M" strings; empty: every model at
        every M of `token_multipliers`.
      counting: "total" (the paper: N counts every parameter, embeddings included) or
        "non_embedding" (Kaplan et al.'s N); sets D = M N and C = 6 N D of every run.
      fit_max_flops: runs with C <= this are fitted, the rest are held out and predicted;
        None: Gadre et al.'s Table 1 scheme (`gadre_fit_set`).
      error_fit_also: trained runs ("model_name:M", above the cutoff) whose measured loss
        and error join the Err(L) fit only (Gadre et al. fit eq. 5 with their 1.4B M=20
        run added); their loss is still predicted, their error is not.
      predict: never-trained targets, "N=<N>,M=<M>[,name=...]" (N counted per `counting`).
      seq_len, batch_size, batch_sizes: training rows; batch_sizes: one per model.
      corpus, vocab_spec: training corpus and vocabulary.
      seeds: one run per (model, M, seed); points of a fit are runs (seeds enter as points).
      eval_checkpoints: checkpoints kept per run (the loss view uses all of them).
      mc_tasks: multiple-choice tasks scored by likelihood (top-1 error = 1 - accuracy).
      min_above_chance: the task average covers the tasks on which some fitted run is at
        least this far above the random baseline (Gadre et al.: 10 points at 0.154B);
        when none is, every task, with a note.
      instances: instances per task (None: all).
      validation: validation-loss settings.
      level: nominal coverage of every interval; num_resamples: bootstrap size.
    """

    name: str = "lmscale over-training study"
    models: tuple[ModelConfig, ...] = ()
    token_multipliers: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    runs: tuple[str, ...] = ()
    counting: str = "total"
    fit_max_flops: float | None = None
    error_fit_also: tuple[str, ...] = ()
    predict: tuple[str, ...] = ()
    seq_len: int = 128
    batch_size: int = 16
    batch_sizes: tuple[int, ...] | None = None
    corpus: str = "lmscale_stdlib_py"
    vocab_spec: str = "byte"
    seeds: tuple[int, ...] = (0,)
    eval_checkpoints: int = 3
    mc_tasks: tuple[str, ...] = ()
    min_above_chance: float = 0.10
    instances: int | None = None
    validation: runner.ValidationConfig = runner.ValidationConfig()
    level: float = 0.9
    num_resamples: int = 200

    def __post_init__(self):
        for field in ("models", "token_multipliers", "runs", "predict", "seeds", "mc_tasks",
                      "error_fit_also"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        where = "OvertrainConfig"
        if self.counting not in COUNTINGS:
            raise ConfigError(f"{where}.counting={self.counting!r}: use one of {COUNTINGS}")
        if not 0 < self.level < 1:
            raise ConfigError(f"{where}.level={self.level}: must lie in (0, 1)")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names) or not all(names) or len(names) < 2:
            raise ConfigError(f"{where}.models: need >= 2 models with distinct names, got "
                              f"{names}")
        if self.batch_sizes is not None:
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
            if len(self.batch_sizes) != len(self.models):
                raise ConfigError(f"{where}.batch_sizes has {len(self.batch_sizes)} entries "
                                  f"for {len(self.models)} models")
        if not self.seeds or self.eval_checkpoints < 1 or self.num_resamples < 2:
            raise ConfigError(f"{where}: seeds must be non-empty, eval_checkpoints >= 1, "
                              "num_resamples >= 2")
        if not self.mc_tasks:
            raise ConfigError(f"{where}.mc_tasks is empty: Err(L) needs a task")
        trained = {(m.name, x) for m, x in self.pairs()}  # raises on a bad `runs` entry
        for text in self.error_fit_also:
            name, _, mult = str(text).partition(":")
            try:
                ok = (name, float(mult)) in trained
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"OvertrainConfig.error_fit_also entry {text!r}: not one "
                                  "of the trained 'model_name:M' runs")
        for t in self.predict:
            parse_target(t)

    def n_of(self, model: ModelConfig) -> int:
        """N of `model` under this config's counting."""
        p = model.num_params
        return int(p.total if self.counting == "total" else p.non_embedding)

    def error_fit_points(self) -> list[tuple[int, float]]:
        """`error_fit_also` as (N, M) under this config's counting."""
        by_name = {m.name: m for m in self.models}
        return [(self.n_of(by_name[t.partition(":")[0]]), float(t.partition(":")[2]))
                for t in self.error_fit_also]

    def pairs(self) -> list[tuple[ModelConfig, float]]:
        """The trained (model, M) pairs, smallest model first, then M."""
        by_name = {m.name: m for m in self.models}
        if not self.runs:
            return [(m, float(x)) for m in self.models for x in self.token_multipliers]
        out = []
        for text in self.runs:
            name, _, mult = str(text).partition(":")
            if name not in by_name:
                raise ConfigError(f"OvertrainConfig.runs entry {text!r}: no model named "
                                  f"{name!r} (have {sorted(by_name)})")
            try:
                m = float(mult)
            except ValueError:
                raise ConfigError(f"OvertrainConfig.runs entry {text!r}: expected "
                                  "'model_name:M' with a number M") from None
            if not m > 0:
                raise ConfigError(f"OvertrainConfig.runs entry {text!r}: M must be > 0")
            out.append((by_name[name], m))
        order = {m.name: i for i, m in enumerate(self.models)}
        out.sort(key=lambda p: (order[p[0].name], p[1]))
        if len(set((m.name, x) for m, x in out)) != len(out):
            raise ConfigError(f"OvertrainConfig.runs={list(self.runs)}: repeated pair")
        return out

    def specs(self) -> list[spec_lib.RunSpec]:
        """One run spec per (model, M, seed): D = M N (N per `counting`)."""
        batch = {m.name: b for m, b in zip(self.models, self.batch_sizes or
                                            (self.batch_size,) * len(self.models))}
        return [spec_lib.RunSpec(model=m, seq_len=self.seq_len, batch_size=batch[m.name],
                                 num_tokens=int(round(mult * self.n_of(m))),
                                 corpus=self.corpus, vocab_spec=self.vocab_spec, seed=s,
                                 name=f"{m.name}_M{mult:g}_s{s}")
                for m, mult in self.pairs() for s in self.seeds]


def parse_target(text: str) -> tuple[str, float, float]:
    """"N=<N>,M=<M>[,name=...]" -> (name, N, M); raises ConfigError naming the entry."""
    where = f"OvertrainConfig.predict entry {text!r}"
    try:
        parts = dict((k.strip(), v.strip()) for k, v in (
            kv.split("=", 1) for kv in str(text).split(",") if kv.strip()))
        name = parts.pop("name", None)
        n, m = float(parts.pop("N")), float(parts.pop("M"))
    except (ValueError, KeyError):
        raise ConfigError(f"{where}: expected 'N=<N>,M=<M>[,name=...]'") from None
    if parts or not (n > 0 and m > 0):
        raise ConfigError(f"{where}: unknown keys {sorted(parts)} or non-positive N / M")
    return name or f"N={n:,.0f} M={m:g}", n, m


def gadre_fit_set(points: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Gadre et al.'s Table 1 scheme on a grid: the M closest to 20 at every size but the
    largest, plus the smallest size at its largest M. Returns one flag per point."""
    sizes = sorted({p["N"] for p in points})
    keep = []
    for p in points:
        same = [q["M"] for q in points if q["N"] == p["N"]]
        near20 = min(same, key=lambda m: (abs(math.log(m / 20.0)), m))
        keep.append((p["N"] != sizes[-1] and p["M"] == near20)
                    or (p["N"] == sizes[0] and p["M"] == max(same)))
    return keep


# --- Analysis ---------------------------------------------------------------------------


def _points(rows, infos: Mapping[str, Any], mc_tasks, counting) -> list[dict[str, Any]]:
    """One point per (N, D): final-checkpoint loss and task errors, seed means and per run.

    `infos`: run name -> `RunRecord` (as training returns and run.json loads) or its
    run.json dict."""
    from lmscale.report import lossview  # pylint: disable=g-import-not-at-top

    index = lossview.Index(rows)
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for run, info in infos.items():
        if isinstance(info, record_lib.RunRecord):
            info = info.to_dict()
        n = int(info["num_params"] if counting == "total" else
                info["num_params_non_embedding"])
        d = int(info["num_tokens"])
        g = groups.setdefault((n, d), dict(N=n, D=d, M=d / n, C=6.0 * n * d,
                                           N_total=int(info["num_params"]),
                                           N_nonemb=int(info["num_params_non_embedding"]),
                                           runs=[], loss_runs=[], err_runs={}))
        step = int(info["num_steps"])
        loss = index.value(run, step, results_lib.VALIDATION_TASK,
                           results_lib.VALIDATION_LOSS)
        if loss is None:
            raise ValueError(f"overtrain: no validation loss for the final checkpoint of "
                             f"run {run!r} (step {step})")
        g["runs"].append(run)
        g["loss_runs"].append(loss)
        for task in mc_tasks:
            acc = index.value(run, step, task, results_lib.ACCURACY)
            q = index.value(run, step, task, results_lib.NUM_INSTANCES)
            if acc is None:
                raise ValueError(f"overtrain: no {task} accuracy for run {run!r} step {step}")
            g["err_runs"].setdefault(task, []).append((1.0 - acc, q or 1.0))
    out = []
    for key in sorted(groups):
        g = groups[key]
        g["loss"] = float(np.mean(g["loss_runs"]))
        g["err"] = {t: float(np.mean([e for e, _ in v])) for t, v in g["err_runs"].items()}
        g["questions"] = {t: float(v[0][1]) for t, v in g["err_runs"].items()}
        out.append(g)
    return out


def average_tasks(points, flags, tasks, random_baselines, min_above_chance, notes
                  ) -> list[str]:
    """The tasks of the average: some fitted run >= `min_above_chance` above random."""
    if random_baselines is None:
        return list(tasks)
    keep = [t for t in tasks if random_baselines.get(t) is not None and any(
        1.0 - p["err"][t] >= random_baselines[t] + min_above_chance
        for p, f in zip(points, flags) if f)]
    if not keep:
        notes.append(f"no task is {min_above_chance:g} above chance on a fitted run: the "
                     "average covers every task")
        return list(tasks)
    if len(keep) < len(tasks):
        notes.append(f"task average over {keep} (>= {min_above_chance:g} above chance on a "
                     f"fitted run); left out: {[t for t in tasks if t not in keep]}")
    return keep


def average_questions(errs: Mapping[str, float], questions: Mapping[str, float],
                      tasks: Sequence[str]) -> float:
    """Effective question count of the task-average error: the Q at which one binomial
    mean has the average's variance sum_t e_t (1 - e_t) / Q_t / T^2 (as
    `lmscale.fit.gadre_effective_questions`)."""
    e = np.array([errs[t] for t in tasks])
    q = np.array([questions[t] for t in tasks])
    var = float(np.sum(e * (1 - e) / q)) / len(tasks) ** 2
    avg = float(e.mean())
    return float(avg * (1 - avg) / var) if var > 0 else float(q.sum())


def _pred_row(pred: F.Prediction, quantity: str, task: str, target: Mapping[str, Any],
              measured: float | None) -> dict[str, Any]:
    ok = measured is not None and measured != 0
    return dict(pred.to_json(), quantity=quantity, task=task, N=int(target["N"]),
                D=int(target["D"]), M=float(target["M"]), C=float(target["C"]),
                target=target.get("name"), measured=measured,
                rel_error=abs(pred.point - measured) / abs(measured) if ok else None,
                covered=None if measured is None else bool(pred.covers(measured)))


def _err_fit(points, task, tasks):
    loss = np.array([l for p in points for l in p["loss_runs"]])
    if task == "average":
        err = np.array([np.mean([p["err_runs"][t][i][0] for t in tasks])
                        for p in points for i in range(len(p["runs"]))])
        q = np.array([average_questions(p["err"], p["questions"], tasks)
                      for p in points for _ in p["runs"]])
    else:
        err = np.array([e for p in points for e, _ in p["err_runs"][task]])
        q = np.array([qq for p in points for _, qq in p["err_runs"][task]])
    return F.fit_error_law(loss, err, num_questions=q)


def _fit_json(fit) -> dict[str, Any]:
    return dict(params=fit.params, reliable=fit.reliable, reason=fit.reason,
                num_points=fit.num_points, method=fit.method)


def analyze_overtrain(rows, infos: Mapping[str, Any], *, mc_tasks: Sequence[str],
                      counting: str = "total", fit_max_flops: float | None = None,
                      error_fit_also: Sequence[tuple[int, float]] = (),
                      random_baselines: Mapping[str, float] | None = None,
                      min_above_chance: float = 0.10,
                      predict: Sequence[str] = (), level: float = 0.9,
                      num_resamples: int = 200, seed: int = 0) -> dict[str, Any]:
    """Result rows + run records -> the over-training analysis (JSON-ready dict).

    Keys: points (one per (N, D): N, D, M, C, loss, err per task and "average", fitted),
    The "average" error covers the tasks on which some fitted run's accuracy is at least
    `min_above_chance` above its random baseline (`random_baselines`; None: every task).
    `error_fit_also`: (N, M) of held-out runs whose error joins the Err(L) fit (M within
    2%, as trained D is rounded up to whole steps); their error is then not predicted.
    loss_law, error_laws (task -> fit), predictions (held-out trained runs, measured) and
    targets (never-trained `predict` entries), backtests.summary (coverage, median error),
    notes. A fit that fails is reported in notes, never fatal.
    """
    if counting not in COUNTINGS:
        raise ValueError(f"analyze_overtrain: counting={counting!r}; use one of {COUNTINGS}")
    tasks = list(mc_tasks)
    points = _points(rows, infos, tasks, counting)
    flags = (gadre_fit_set(points) if fit_max_flops is None
             else [p["C"] <= fit_max_flops for p in points])
    notes: list[str] = []
    avg = average_tasks(points, flags, tasks, random_baselines, min_above_chance, notes)
    for p in points:
        p["err"]["average"] = float(np.mean([p["err"][t] for t in avg]))
    for p, f in zip(points, flags):
        p["fitted"] = bool(f)
        p["error_fitted"] = bool(f) or any(p["N"] == n and abs(p["M"] / m - 1) < 0.02
                                           for n, m in error_fit_also)
    fitted = [p for p in points if p["fitted"]]
    held = [p for p in points if not p["fitted"]]
    out: dict[str, Any] = dict(counting=counting, fit_max_flops=fit_max_flops, tasks=tasks,
                               average_tasks=avg, min_above_chance=min_above_chance,
                               points=points, notes=notes, level=level, predictions=[],
                               targets=[], error_laws={})
    N = np.array([p["N"] for p in fitted for _ in p["runs"]], float)
    D = np.array([p["D"] for p in fitted for _ in p["runs"]], float)
    L = np.array([l for p in fitted for l in p["loss_runs"]])
    try:
        loss_fit = F.fit_loss_law(N, D, L, form="overtrain")
    except (ValueError, RuntimeError) as e:
        notes.append(f"L(C, M) could not be fitted on {len(L)} run(s): {e}")
        out["loss_law"] = dict(error=str(e))
        out["backtests"] = dict(summary=backtest_summary([], level))
        return out
    out["loss_law"] = _fit_json(loss_fit)
    for p in points:
        pl = float(loss_fit.predict(N=np.array([p["N"]], float), D=np.array([p["D"]],
                                                                              float))[0])
        p["loss_fit"], p["loss_rel_error"] = pl, abs(pl - p["loss"]) / p["loss"]
    err_fits = {}
    for task in tasks + ["average"]:
        try:
            err_fits[task] = _err_fit([p for p in points if p["error_fitted"]], task, avg)
            out["error_laws"][task] = _fit_json(err_fits[task])
        except (ValueError, RuntimeError) as e:
            notes.append(f"Err(L) for {task} could not be fitted: {e}")
            out["error_laws"][task] = dict(error=str(e))
    never = []
    for text in predict:
        name, n, m = parse_target(text)
        never.append(dict(name=name, N=n, D=m * n, M=m, C=6.0 * n * n * m))
    for group, key in ((held, "predictions"), (never, "targets")):
        if group:
            out[key] = _chain_rows(loss_fit, err_fits, group, avg, level, num_resamples,
                                   seed, notes)
    out["backtests"] = dict(summary=backtest_summary(out["predictions"], level))
    return out


def _chain_rows(loss_fit, err_fits, targets, tasks, level, num_resamples, seed, notes):
    """Prediction rows (loss, then error per task and average) for `targets`."""
    N = np.array([t["N"] for t in targets], float)
    D = np.array([t["D"] for t in targets], float)
    rows, loss_done = [], False
    for task, fit in err_fits.items():
        q = None
        if all("err" in t for t in targets):
            q = np.array([average_questions(t["err"], t["questions"], tasks)
                          if task == "average" else t["questions"][task] for t in targets])
        try:
            lp, ep = F.predictive_chain(loss_fit, fit, level, num_resamples, seed,
                                        num_questions=q, N=N, D=D)
        except (ValueError, RuntimeError) as e:
            notes.append(f"chained prediction for {task} failed: {e}")
            continue
        if not loss_done:
            rows += [_pred_row(p, "loss", "validation", t, t.get("loss"))
                     for p, t in zip(lp, targets)]
            loss_done = True
        rows += [_pred_row(p, "error", task, t, t.get("err", {}).get(task))
                 for p, t in zip(ep, targets) if not t.get("error_fitted")]
    if not loss_done:
        preds = F.predictive(loss_fit, level, num_resamples, seed, N=N, D=D)
        rows += [_pred_row(p, "loss", "validation", t, t.get("loss"))
                 for p, t in zip(preds, targets)]
    return rows


# --- Driver -----------------------------------------------------------------------------


def plan(config: OvertrainConfig) -> str:
    """The runs as text (name, N, D, M, C, fitted or held out); nothing is trained."""
    specs = config.specs()
    pts = [dict(N=config.n_of(s.model), M=s.num_tokens / config.n_of(s.model),
                D=s.num_tokens, C=6.0 * config.n_of(s.model) * s.num_tokens) for s in specs]
    flags = (gadre_fit_set(pts) if config.fit_max_flops is None
             else [p["C"] <= config.fit_max_flops for p in pts])
    lines = [f"{config.name}: {len(specs)} runs, N counted {config.counting}", ""]
    for s, p, f in zip(specs, pts, flags):
        lines.append(f"  {s.name:<16} N={p['N']:>10,} D={p['D']:>12,} M={p['M']:6.3g} "
                     f"C={p['C']:.3g} steps={s.num_steps:>6} {'fit' if f else 'held out'}")
    lines.append(f"  total tokens {sum(s.num_tokens for s in specs):,}")
    return "\n".join(lines)


def cost_plan(config: OvertrainConfig, optimizer=None, mesh=None, loop=None, *,
              probe: bool = False, use_jax: bool = True):
    """The study's cost plan (`lmscale.report.plan`): one rung per run (its steps, FLOPs,
    memory, `eval_checkpoints` checkpoints) and the evaluation work of validation and every
    MC task on them; with `probe`, timed by a few real train steps per run shape
    (`lmscale.report.plan.probe.time_plan`)."""
    from lmscale.report.plan import adapter, core  # pylint: disable=g-import-not-at-top

    rungs = []
    for s in config.specs():  # one rung per (model, M), its seeds counted
        if rungs and rungs[-1].model == s.model and rungs[-1].num_steps == s.num_steps:
            rungs[-1] = dataclasses.replace(rungs[-1], seeds=rungs[-1].seeds + 1)
            continue
        try:
            warmup = optimizer.warmup_for(s.num_steps) if optimizer is not None else 0
        except ConfigError:
            warmup = s.num_steps  # the plan's step check then warns; training would refuse
        rungs.append(core.Rung(name=s.name.rsplit("_s", 1)[0], model=s.model,
                               seq_len=s.seq_len, batch_size=s.batch_size,
                               num_steps=s.num_steps, checkpoints=config.eval_checkpoints,
                               warmup_steps=warmup,
                               token_multiplier=s.num_tokens / config.n_of(s.model)))
    tasks = []
    if config.validation.enabled:
        tasks.append(core.Task(name=adapter.VALIDATION_NAME, kind=core.VALIDATION,
                               scored_tokens=adapter.validation_tokens(
                                   config.corpus, config.vocab_spec, config.validation,
                                   config.seq_len)))
    tasks += [adapter.task_from_registry(t, config.vocab_spec, config.instances, None, None,
                                         None) for t in config.mc_tasks]
    dev_mesh, device = adapter.mesh_and_device(mesh, use_jax=use_jax)
    cost = core.build_plan(config.name, rungs, tasks, dev_mesh, device)
    if probe:
        from lmscale.report.plan import probe as probe_lib  # pylint: disable=g-import-not-at-top

        probe_lib.time_plan(cost, optimizer=optimizer, mesh_config=mesh,
                            constrain_activations=True if loop is None
                            else loop.constrain_activations)
    return cost


def train_runs(config: OvertrainConfig, runs_dir: pathlib.Path, optimizer, mesh, loop,
               config_text) -> dict[str, record_lib.RunRecord]:
    """Trains every run not yet done (smallest first); returns run name -> record."""
    records, keys = {}, {}
    specs = config.specs()
    start = time.time()
    for i, spec in enumerate(specs, 1):
        key = (config.n_of(spec.model), spec.total_tokens, spec.seed)
        if key in keys:
            raise ConfigError(f"OvertrainConfig: runs {keys[key]} and {spec.name} have the "
                              f"same (N, D, seed) = {key}")
        keys[key] = spec.name
        every = -(-spec.total_tokens // config.eval_checkpoints)
        rec = train_loop.train(spec=spec, workdir=str(runs_dir), optimizer=optimizer,
                               mesh=mesh, config_text=config_text,
                               loop=dataclasses.replace(loop, checkpoint_every_tokens=every))
        records[spec.name] = rec
        logging.info("overtrain: run %d/%d %s done (%.0fs elapsed)", i, len(specs),
                     spec.name, time.time() - start)
    return records


def evaluate_runs(config: OvertrainConfig, runs_dir: pathlib.Path, names: Sequence[str],
                  results_path: pathlib.Path) -> results_lib.ResultsFile:
    """Validation loss and every MC task on every kept checkpoint of every run."""
    return runner.evaluate([str(runs_dir / n) for n in names], list(config.mc_tasks),
                           results_path=str(results_path), validation=config.validation,
                           limit=config.instances)


def analyze_workdir(config: OvertrainConfig, root: pathlib.Path, infos, rows,
                    setup: Mapping[str, Any]) -> dict[str, Any]:
    """Both analyses (over-training and loss view) -> report.md, results.json, figures."""
    from lmscale.data import registry  # pylint: disable=g-import-not-at-top
    from lmscale.report import lossview  # pylint: disable=g-import-not-at-top
    from lmscale.report import overtrain_report  # pylint: disable=g-import-not-at-top

    rows = list(rows)
    baselines = {t: registry.get_eval_task(t).random_baseline for t in config.mc_tasks}
    analysis = analyze_overtrain(rows, infos, mc_tasks=config.mc_tasks,
                                 counting=config.counting,
                                 fit_max_flops=config.fit_max_flops,
                                 error_fit_also=config.error_fit_points(),
                                 random_baselines=baselines,
                                 min_above_chance=config.min_above_chance,
                                 predict=config.predict,
                                 level=config.level, num_resamples=config.num_resamples)
    analysis["loss_view"] = lossview.analyze_lossview(
        rows, infos, mc_tasks=config.mc_tasks, random_baselines=baselines,
        counting=config.counting, level=config.level,
        num_resamples=min(config.num_resamples, 100))
    overtrain_report.write(analysis, root, title=config.name, setup=setup)
    return analysis


def predict_workdir(config: OvertrainConfig, workdir) -> dict[str, Any]:
    """Re-analyses a finished workdir (runs/*/run.json, results.jsonl); trains nothing."""
    root = pathlib.Path(workdir).absolute()
    results_path = root / runner.RESULTS_FILE
    names = [s.name for s in config.specs()]
    missing = [n for n in names if not (root / "runs" / n / record_lib.RUN_FILE).exists()]
    if missing or not results_path.exists():
        raise FileNotFoundError(f"overtrain predict: {root} lacks runs {missing} or "
                                f"{runner.RESULTS_FILE}")
    infos = {n: record_lib.RunRecord.load(root / "runs" / n) for n in names}
    setup = {}
    if (root / "results.json").exists():
        setup = json.loads((root / "results.json").read_text(encoding="utf-8")).get(
            "setup") or {}
    return analyze_workdir(config, root, infos, results_lib.read_rows(results_path), setup)


def run_overtrain(config: OvertrainConfig, workdir: str,
                  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(),
                  mesh: state_lib.MeshConfig = state_lib.MeshConfig(),
                  loop: train_loop.LoopConfig = train_loop.LoopConfig(),
                  config_text: str | None = None, mode: str = "run",
                  probe: bool = False) -> dict[str, Any]:
    """Runs (or resumes) the over-training study; returns the analysis dict.

    mode "plan": {"plan": `plan(config)` and the cost plan (`cost_plan`; timed by a short
    probe with `probe`)}; "predict": `predict_workdir` (no training).
    """
    if mode == "plan":
        from lmscale.report.plan import render  # pylint: disable=g-import-not-at-top

        cost = cost_plan(config, optimizer, mesh, loop, probe=probe)
        return {"plan": plan(config) + "\n\n" + render.format_plan(cost)}
    if mode == "predict":
        return predict_workdir(config, workdir)
    if mode != "run":
        raise ValueError(f"run_overtrain: mode={mode!r}; use 'run', 'plan' or 'predict'")
    import jax  # pylint: disable=g-import-not-at-top

    start = time.time()
    root = pathlib.Path(workdir).absolute()
    runs_dir = root / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if config_text and jax.process_index() == 0:
        (root / "config.gin").write_text(config_text, encoding="utf-8")
    logging.info("%s", plan(config))
    infos = train_runs(config, runs_dir, optimizer, mesh, loop, config_text)
    train_s = time.time() - start
    results = evaluate_runs(config, runs_dir, list(infos), root / runner.RESULTS_FILE)
    eval_s = time.time() - start - train_s
    if jax.process_index() != 0:
        return {}
    setup = {
        "runs": ", ".join(f"{m.name}:M{x:g}" for m, x in config.pairs()),
        "N counting": config.counting,
        "fit set": (f"C <= {config.fit_max_flops:.3g}" if config.fit_max_flops is not None
                    else "Gadre et al. Table 1 scheme"),
        "corpus / vocabulary": f"{config.corpus} / {config.vocab_spec}",
        "seeds": list(config.seeds), "multiple-choice tasks": list(config.mc_tasks),
        "optimizer": f"AdamW lr_peak {optimizer.lr_peak}, cosine to the last step",
        "train wall time (s, this invocation)": round(train_s, 1),
        "evaluation wall time (s, this invocation)": round(eval_s, 1),
        "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
    }
    analysis = analyze_workdir(config, root, infos, results.rows, setup)
    logging.info("overtrain %r: report %s (%.0fs in all)", config.name, root / "report.md",
                 time.time() - start)
    for p in analysis["predictions"] + analysis["targets"]:
        logging.info("prediction %s %s N=%d M=%.3g: %.5g [%.5g, %.5g] measured %s",
                     p["quantity"], p["task"], p["N"], p["M"], p["predicted"],
                     *p["interval"], p["measured"])
    return analysis
