"""The predict-before-you-train study: train a ladder, evaluate it, fit, predict, report.

Stage: report (the top of the library; `lmscale.main.study` is its absl binary). One call,
`run_study`, runs the whole loop of DESIGN.md section 1 and is resumable at every level:
finished runs are skipped by the trainer, finished (run, checkpoint, task) units and
finished PassUntil instances by the evaluator, and the analysis is recomputed from the
results file each time.

Outputs in the workdir: `plan.json` (the plan of `lmscale.report.plan`, written when the
study first starts), `runs/<run>/` (training), `results.jsonl` (every measurement),
`stages.json` (measured evaluation seconds per run), `report.md`, `results.json` and PNG
figures. The report sets the plan beside the measured wall times.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Any, Mapping, Sequence

from absl import logging

from lmscale.config_check import check_fields
from lmscale.eval import results as results_lib
from lmscale.eval import runner
from lmscale.models import ConfigError, ModelConfig
from lmscale.report import analysis as analysis_lib
from lmscale.report import figures as figures_lib
from lmscale.report import greedy as greedy_report
from lmscale.report import lossview
from lmscale.report import markdown
from lmscale.report.stages import (PLAN_FILE, STAGES_FILE, _eval_seconds,  # noqa: F401
                                   _save_stages, plan_vs_measured, save_plan)
from lmscale.train import ladder as ladder_lib
from lmscale.train import loop as train_loop
from lmscale.train import optim
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib
from lmscale.train import record as record_lib
from lmscale.train.record import RunRecord


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study trains, measures and predicts.

    Attributes:
      name: study title (report heading).
      ladder: the runs (`lmscale.train.ladder.LadderConfig`: a `RunSpec` template for
        seq_len, batch_size, corpus and vocab_spec, plus the models, smallest first and of
        one shape family (only width changes), one token multiplier M = D / N (N
        non-embedding) for every rung, the seeds (rung values are seed means) and optional
        per-model batch sizes (Hu et al. grow the batch with size, Table 4, so the small
        rungs still take a few hundred steps at the same M)).
      eval_checkpoints: checkpoints kept per run for evaluation (the last is the final
        one); intermediate ones feed the loss-vs-performance views.
      held_out: number of largest rungs excluded from every fit and predicted.
      mc_tasks: multiple-choice tasks scored by likelihood.
      passuntil_tasks: generative tasks evaluated by PassUntil.
      greedy_tasks: generative tasks (with a checker) also decoded greedily on every
        checkpoint: greedy exact match with its interval, beside PassUntil in the report
        (`lmscale.eval.greedy`, `lmscale.report.greedy`).
      instances: instances per task (None: all).
      passuntil: PassUntil settings on final checkpoints.
      intermediate_k_max: sample cap on intermediate checkpoints (cheaper; None: same).
      passuntil_budget: None: every instance of a final checkpoint gets the cap
        `passuntil.k_max`. An int B: each PassUntil task may draw B x instances samples on
        a rung's final checkpoint, spread by `lmscale.eval.budget` from the PU the rungs
        below predict for each instance (`lmscale.report.budgeting`; the first rung gets
        the flat cap).
      validation: validation-loss settings.
      targets: never-trained models to predict (the report's first table), each a string:
        "d_model=W" (the ladder's shape family at width W: heads and MLP scaled with
        the width, D = M N), "N=<non-embedding N>,D=<tokens>" or "N=<N>,M=<multiplier>";
        an optional "name=..." part names it.
      level: nominal coverage of every prediction interval.
      pass_at_k: the k's of the report's measured and predicted pass@k (k above the cap
        is left out).
      loss_law_drop_smallest: how many of the smallest fitted rungs the loss-law choice
        tries each law without (`lmscale.fit.select.choose_loss_law`): (0,) fits on
        every rung, (1,) never on the smallest, (0, 1) lets the backtest decide.
      beam_sizes: () (default, off), or beam widths W: beam search on every PassUntil
        instance at each run's final checkpoint, for Hu et al.'s beam-search vs
        random-sampling table (`lmscale.eval.beam`, `lmscale.report.hu`).
      passuntil_reference: after each rung's evaluation, time the sampler alone on the
        shapes of its largest PassUntil unit (`runner.evaluate`'s `pu_reference`, ~2 s a
        CPU rung) and print the in-study PassUntil rate as a share of it, per rung, in
        the study log and the report's Setup.
    """

    ladder: ladder_lib.LadderConfig
    name: str = "lmscale study"
    eval_checkpoints: int = 4
    held_out: int = 1
    mc_tasks: tuple[str, ...] = ()
    passuntil_tasks: tuple[str, ...] = ()
    greedy_tasks: tuple[str, ...] = ()
    instances: int | None = None
    passuntil: runner.PassUntilConfig = runner.PassUntilConfig()
    intermediate_k_max: int | None = None
    passuntil_budget: int | None = None
    validation: runner.ValidationConfig = runner.ValidationConfig()
    targets: tuple[str, ...] = ()
    level: float = 0.9
    pass_at_k: tuple[int, ...] = (1, 10, 100)
    beam_sizes: tuple[int, ...] = ()
    loss_law_drop_smallest: tuple[int, ...] = (0,)
    passuntil_reference: bool = True

    def __post_init__(self):
        if not isinstance(self.ladder, ladder_lib.LadderConfig):
            raise ConfigError(f"StudyConfig.ladder={self.ladder!r}: expected a LadderConfig "
                              "(in gin: ladder = @ladder.LadderConfig())")
        check_fields(self, ConfigError, ranges={
            "held_out": {"min": 0}, "eval_checkpoints": {"min": 1}, "instances": {"min": 1},
            "intermediate_k_max": {"min": 1}, "passuntil_budget": {"min": 1}})
        for field in ("targets", "mc_tasks", "passuntil_tasks", "greedy_tasks", "pass_at_k",
                      "beam_sizes", "loss_law_drop_smallest"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in ("pass_at_k", "beam_sizes"):
            if any(not isinstance(v, int) or v < 1 for v in getattr(self, field)):
                raise ConfigError(f"StudyConfig.{field}={getattr(self, field)!r}: positive "
                                  "integers")
        drops = self.loss_law_drop_smallest
        if not drops or any(not isinstance(v, int) or not 0 <= v < len(self.ladder.models)
                            for v in drops):
            raise ConfigError(f"StudyConfig.loss_law_drop_smallest={drops!r}: one or more "
                              "integers in [0, number of rungs)")
        if not 0 < self.level < 1:
            raise ConfigError(f"StudyConfig.level={self.level}: must lie in (0, 1)")
        ladder = self.ladder
        if len(ladder.token_multipliers) != 1:
            raise ConfigError(f"StudyConfig.ladder.token_multipliers="
                              f"{list(ladder.token_multipliers)}: a study trains every rung "
                              "at one token multiplier")
        if len(ladder.models) < self.held_out + 3:
            raise ConfigError(
                f"StudyConfig.ladder.models has {len(ladder.models)} model(s); with held_out="
                f"{self.held_out} the loss law needs >= {self.held_out + 3}")
        sizes = [m.num_params.non_embedding for m in ladder.models]
        if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
            raise ConfigError(f"StudyConfig.ladder.models: must be strictly increasing in size "
                              f"(non-embedding N = {sizes})")
        if self.eval_checkpoints < 1:
            raise ConfigError(f"StudyConfig.eval_checkpoints={self.eval_checkpoints}: >= 1")
        if self.intermediate_k_max is not None and self.intermediate_k_max < self.passuntil.r:
            raise ConfigError(f"StudyConfig.intermediate_k_max={self.intermediate_k_max} < "
                              f"PassUntil r={self.passuntil.r}")
        if self.instances is not None and self.instances < 1:
            raise ConfigError(f"StudyConfig.instances={self.instances}: >= 1 or None")

    @property
    def token_multiplier(self) -> float:
        """The study's one M (`ladder.token_multipliers`)."""
        return self.ladder.token_multipliers[0]

    def resolved_targets(self) -> list[tuple[str, int, int]]:
        """The targets as (name, non-embedding N, D); raises ConfigError naming a bad one."""
        return [resolve_target(t, self.ladder.models[-1], self.token_multiplier)
                for t in self.targets]

    def specs(self) -> list[spec_lib.RunSpec]:
        """One run spec per (model, seed), smallest model first."""
        return self.ladder.specs()


def resolve_target(text: str, family: ModelConfig, token_multiplier: float
                   ) -> tuple[str, int, int]:
    """One target string (see `StudyConfig.targets`) -> (name, non-embedding N, D).

    "d_model=W" takes `family` (the ladder's largest model) at width W with n_heads and
    d_ff scaled by W / d_model (head_dim kept); D = token_multiplier * N.
    """
    where = f"StudyConfig.targets entry {text!r}"
    try:
        parts = dict(kv.split("=", 1) for kv in str(text).replace(" ", "").split(",") if kv)
    except ValueError:
        raise ConfigError(f"{where}: expected key=value parts separated by commas") from None
    name = parts.pop("name", None)
    unknown = set(parts) - {"d_model", "N", "D", "M"}
    if unknown or not parts:
        raise ConfigError(f"{where}: unknown or missing keys {sorted(unknown)}; use d_model=W, "
                          "N=..,D=.. or N=..,M=..")
    try:
        vals = {k: float(v) for k, v in parts.items()}
    except ValueError:
        raise ConfigError(f"{where}: every value must be a number") from None
    if "d_model" in vals:
        width = int(vals["d_model"])
        if width % family.head_dim:
            raise ConfigError(f"{where}: d_model must be a multiple of head_dim "
                              f"{family.head_dim}")
        heads = width // family.head_dim
        # Multi-head attention stays multi-head; grouped-query keeps its kv heads.
        kv = heads if family.n_kv_heads in (None, family.n_heads) else family.n_kv_heads
        if heads % kv:
            raise ConfigError(f"{where}: {heads} heads are not divisible by the family's "
                              f"n_kv_heads={kv}")
        model = family.replace(d_model=width, n_heads=heads, n_kv_heads=kv,
                               d_ff=int(round(family.d_ff * width / family.d_model)),
                               name=name or f"d_model={width}")
        n = model.num_params.non_embedding
        return name or f"d_model={width}", n, int(round(token_multiplier * n))
    if "N" not in vals or ("D" in vals) == ("M" in vals):
        raise ConfigError(f"{where}: give N with exactly one of D or M")
    n = int(vals["N"])
    d = int(vals["D"]) if "D" in vals else int(round(vals["M"] * n))
    if n <= 0 or d <= 0:
        raise ConfigError(f"{where}: N and D must be positive")
    return name or f"N={n:,}", n, d


class _Stage:
    """Logs a study stage with elapsed time and an ETA from work done so far."""

    def __init__(self, name: str, total_work: float):
        self.name, self.total, self.done, self.start = name, total_work, 0.0, time.time()

    def advance(self, work: float, what: str) -> None:
        self.done += work
        elapsed = time.time() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        logging.info("study %s: %s | %.0f%% done, %.0fs elapsed, ETA %.0fs", self.name, what,
                     100 * self.done / self.total, elapsed, eta)


def train_ladder(config: StudyConfig, runs_dir: pathlib.Path,
                 optimizer: optim.OptimizerConfig, mesh: state_lib.MeshConfig,
                 loop: train_loop.LoopConfig, config_text: str | None
                 ) -> dict[str, RunRecord]:
    """Trains every (model, seed) run not yet done (`lmscale.train.ladder.train_ladder`);
    returns run name -> record."""
    specs = config.specs()
    work = lambda s: s.total_tokens * s.model.flops_per_token(s.seq_len)  # noqa: E731
    stage = _Stage("train", sum(work(s) for s in specs))

    def loop_for(spec: spec_lib.RunSpec) -> train_loop.LoopConfig:
        every = -(-spec.total_tokens // config.eval_checkpoints)
        return dataclasses.replace(loop, checkpoint_every_tokens=every)

    def on_done(i: int, spec: spec_lib.RunSpec, _record) -> None:
        stage.advance(work(spec), f"run {i}/{len(specs)} {spec.name} "
                      f"(N={spec.num_params_non_embedding:,}, D={spec.total_tokens:,}) done")

    train = functools.partial(train_loop.train, optimizer=optimizer, mesh=mesh)
    records = ladder_lib.train_ladder(config.ladder, runs_dir, train_fn=train,
                                      config_text=config_text, loop_for=loop_for,
                                      on_done=on_done)
    return {r.run_name: r for r in records.values()}


def evaluate_ladder(config: StudyConfig, runs_dir: pathlib.Path,
                    infos: dict[str, RunRecord], results_path: pathlib.Path,
                    seconds: dict[str, float] | None = None,
                    on_run=None, summaries: dict | None = None) -> results_lib.ResultsFile:
    """Evaluates every kept checkpoint: full PassUntil on finals, capped on the rest.
    Adds each run's evaluation wall time to `seconds[run name]` when given and calls
    `on_run(seconds)` after each run (the study saves stages.json as it goes); appends
    each run's `runner.EvalSummary` to `summaries` (run name -> summary) when given. With
    `config.beam_sizes`, beam search on the final checkpoints follows (`beam_ladder`)."""
    tasks = list(config.mc_tasks) + list(config.passuntil_tasks)
    intermediate_pu = config.passuntil if config.intermediate_k_max is None else \
        dataclasses.replace(config.passuntil, k_max=config.intermediate_k_max)
    stage = _Stage("evaluate", len(infos))
    results = None
    for name in infos:
        run_start = time.time()
        run_dir = runs_dir / name
        caps = _budget_caps(config, infos, name, results, results_path)
        # One plan per run: the final checkpoint with `passuntil` (and the budget's caps),
        # the intermediate ones with the cheaper cap.
        results = runner.evaluate([str(run_dir)], tasks, passuntil_config=config.passuntil,
                                  passuntil_caps=caps, intermediate_passuntil=intermediate_pu,
                                  results_path=str(results_path), validation=config.validation,
                                  limit=config.instances, greedy_tasks=config.greedy_tasks,
                                  pu_reference=config.passuntil_reference)
        _note_summary(results, name, summaries)
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.time() - run_start
            if on_run is not None:
                on_run(seconds)
        stage.advance(1, f"{name}: evaluated")
    if config.beam_sizes and config.passuntil_tasks:  # Hu et al.'s beam vs sampling table
        results = beam_ladder(config, runs_dir, infos, results_path)
    return results


def beam_ladder(config: StudyConfig, runs_dir: pathlib.Path, infos: dict[str, RunRecord],
                results_path: pathlib.Path) -> results_lib.ResultsFile:
    """Beam search (`config.beam_sizes`) on every PassUntil instance at each run's final
    checkpoint (`lmscale.eval.beam`; finished units skipped); returns the results."""
    from lmscale.eval import beam  # pylint: disable=g-import-not-at-top

    for name in infos:
        beam.evaluate_beam(str(runs_dir / name), config.passuntil_tasks, config.beam_sizes,
                           results_path=str(results_path), limit=config.instances)
    return results_lib.ResultsFile(results_path)


def _note_summary(results, name: str, summaries: dict | None) -> None:
    summary = getattr(results, "summary", None)
    if summary is None:
        return
    logging.info("evaluate %s: %s", name, summary.line())
    if summaries is not None:
        summaries[name] = summary


def _budget_caps(config: StudyConfig, infos: dict[str, RunRecord], name: str, results,
                 results_path: pathlib.Path):
    """Per-instance caps of run `name`'s final checkpoint (None: the flat cap)."""
    if config.passuntil_budget is None or not config.passuntil_tasks:
        return None
    from lmscale.report import budgeting  # pylint: disable=g-import-not-at-top

    target = infos[name]
    done = [rec for rec in infos.values() if rec.N < target.N]
    if not done:
        return None
    if results is not None:
        rows = results.rows
    elif pathlib.Path(results_path).exists():
        rows = results_lib.read_rows(results_path)
    else:
        return None
    caps, _ = budgeting.next_rung_caps(
        rows, done, target.N, config.passuntil_tasks, r=config.passuntil.r,
        k_max=config.passuntil.k_max, per_instance=config.passuntil_budget)
    return caps or None


def evaluation_summary(summaries: Sequence) -> str | None:
    """One line over the study's evaluator calls: wall, compile share, PassUntil rate."""
    ran = [s for s in summaries if s.units_run]
    if not ran:
        return None
    wall, compile_s = sum(s.wall_s for s in ran), sum(s.compile_s for s in ran)
    samples, sample_s = sum(s.pu_samples for s in ran), sum(s.pu_sample_s for s in ran)
    line = (f"{sum(s.units_run for s in ran)} units in {wall:.0f} s, compile {compile_s:.0f} s "
            f"({100 * compile_s / wall:.0f}%), "
            f"{sum(s.cache_hits for s in ran)} persistent-cache hits")
    if samples:  # the summed drivers' rate, defined once by `runner.EvalSummary`
        # The reference over every rung: the time the sampler alone would take for each
        # rung's work (its decode tokens, else its samples) at that rung's rate, summed;
        # none when a rung lacks one (a partial reference compares unlike work).
        timed = [s for s in ran if s.pu_alone_per_s > 0 and s.pu_samples]
        alone = length = 0.0
        if timed and len(timed) == len([s for s in ran if s.pu_samples]):
            length = sum(s.pu_alone_length * s.pu_samples for s in timed) / samples
            if all(s.pu_tokens and s.alone_decode_tokens_per_s > 0 for s in timed):
                work = [s.pu_tokens - s.pu_samples for s in timed]
                decode = sum(work) / sum(w / s.alone_decode_tokens_per_s
                                         for w, s in zip(work, timed))
                alone = decode / (length - 1.0)  # so that alone x (length - 1) = decode
            else:
                alone, length = samples / sum(s.pu_samples / s.pu_alone_per_s for s in timed), 0.0
        total = runner.EvalSummary(
            units_run=0, units_skipped=0, wall_s=wall, compile_s=compile_s, programs=0,
            cache_hits=0, cache_misses=0, pu_samples=samples, pu_sample_s=sample_s,
            pu_compile_s=sum(s.pu_compile_s for s in ran), pu_alone_per_s=alone,
            pu_alone_length=length, pu_tokens=sum(s.pu_tokens for s in ran),
            pu_alone_samples=(timed[0].pu_alone_samples if timed and len(
                {s.pu_alone_samples for s in timed}) == 1 else 0),
            pu_alone_how=(timed[0].pu_alone_how if timed and len(
                {s.pu_alone_how for s in timed}) == 1 else ""))
        line += total.line()[total.line().index("; PassUntil"):]
    return line


def passuntil_rates(summaries: Mapping[str, Any]) -> str | None:
    """Per rung: in-study PassUntil samples/s (compiles excluded) and the share of the
    sampler alone on the same shapes (`EvalSummary.alone_share`: by decode tokens/s when
    counted, each sample's first token left out); None when no rung measured its reference."""
    def one(name, s):
        tokens = (f" = {s.decode_tokens_per_s:,.0f} decode tokens/s vs "
                  f"{s.alone_decode_tokens_per_s:,.0f}"
                  if s.pu_tokens and s.alone_decode_tokens_per_s > 0 else
                  f" vs {s.pu_alone_per_s:,.0f} samples/s")
        return (f"{name} {s.samples_per_s:,.0f} samples/s{tokens} alone "
                f"({100 * s.alone_share:.0f}%)")
    parts = [one(name, s) for name, s in summaries.items()
             if s.pu_samples and s.pu_alone_per_s > 0]
    return ", ".join(parts) or None


PU_RATES_KEY = ("PassUntil rate per rung (this invocation; in the study excluding "
                "compiles, and its share of the sampler alone on the same shapes)")
REPORT_KEY_FILE = "report.key"  # what the report was made from (`inputs_key`)


def inputs_key(config: StudyConfig, root: pathlib.Path, infos: dict[str, RunRecord]) -> str:
    """A hash of everything the analysis reads: the study config, every run record, the
    results file and the source of the fitting and reporting code. Equal keys: the report
    on disk is what a fresh analysis would write."""
    h = hashlib.sha1(repr(config).encode())
    for name in sorted(infos):
        h.update(record_lib.RunRecord.path(root / "runs" / name).read_bytes())
    h.update((root / runner.RESULTS_FILE).read_bytes())
    package = pathlib.Path(__file__).resolve().parents[1]
    for path in sorted([*package.glob("fit/*.py"), *package.glob("report/*.py")]):
        h.update(path.read_bytes())
    return h.hexdigest()


def cached_analysis(root: pathlib.Path, key: str) -> dict[str, Any] | None:
    """The saved analysis (results.json) when the report was made from inputs `key`."""
    key_file, saved = root / REPORT_KEY_FILE, root / "results.json"
    if not (key_file.exists() and saved.exists()):
        return None
    if key_file.read_text(encoding="utf-8").strip() != key:
        return None
    return json.loads(saved.read_text(encoding="utf-8"))


def analyze_and_report(config: StudyConfig, workdir: pathlib.Path,
                       infos: dict[str, RunRecord], rows: Sequence,
                       setup: dict[str, Any]) -> dict[str, Any]:
    """Fits and predicts from the rows; writes report.md, results.json and figures (with
    the plan beside the measured times when the workdir has a plan.json)."""
    from lmscale.data import registry

    start = time.perf_counter()
    baselines = {t: registry.get_eval_task(t).random_baseline for t in config.mc_tasks}
    analysis = analysis_lib.analyze(
        rows, infos, mc_tasks=config.mc_tasks,
        passuntil_tasks=config.passuntil_tasks, random_baselines=baselines,
        held_out=config.held_out, passuntil_r=config.passuntil.r,
        passuntil_k_max=config.passuntil.k_max,
        targets=config.resolved_targets(), level=config.level, pass_at_k=config.pass_at_k,
        loss_drop_smallest=config.loss_law_drop_smallest)
    analysis["isolation"] = markdown.isolation_levels(rows)  # code tasks' sandbox levels
    if config.greedy_tasks:  # greedy exact match beside PassUntil (report/greedy.py)
        analysis["greedy"] = greedy_report.analyze(rows, config.greedy_tasks, config.level)
    if config.mc_tasks:  # Du et al.'s loss view: every size and kept checkpoint
        analysis["loss_view"] = lossview.analyze_lossview(
            rows, mc_tasks=config.mc_tasks, random_baselines=baselines,
            counting="non_embedding", level=config.level)
    figures = figures_lib.write_figures(analysis, workdir)
    figures.update(lossview.write_figures(analysis.get("loss_view"), workdir))
    # fit/report measured up to the report's writing (milliseconds after), so that the
    # report shows it; the study saves the whole stage to stages.json after.
    analysis["fit_report_s"] = time.perf_counter() - start
    analysis["plan_vs_measured"] = plan_vs_measured(pathlib.Path(workdir), infos,
                                                    analysis["fit_report_s"])
    markdown.write_report(analysis, figures, workdir, title=config.name, setup=setup)
    return analysis


def predict_workdir(config: StudyConfig, workdir: str | pathlib.Path,
                    targets: Sequence[str] | None = None) -> dict[str, Any]:
    """Refits an existing study workdir and predicts `config.targets` (or `targets`, which
    replace them); trains and evaluates nothing. Reads `runs/*/run.json` and `results.jsonl`, rewrites report.md,
    results.json and the figures; returns the analysis.

    Raises:
      FileNotFoundError: no run records or no results file in the workdir.
    """
    if targets:
        config = dataclasses.replace(config, targets=tuple(targets))
    root = pathlib.Path(workdir).absolute()
    results_path = root / runner.RESULTS_FILE
    run_dirs = sorted(p.parent for p in (root / "runs").glob(f"*/{record_lib.RUN_FILE}"))
    if not run_dirs or not results_path.exists():
        raise FileNotFoundError(f"predict: {root} has no finished study (need runs/*/"
                                f"{record_lib.RUN_FILE} and {runner.RESULTS_FILE})")
    names = {spec.name for spec in config.specs()}
    infos = {d.name: RunRecord.load(d) for d in run_dirs if d.name in names}
    if len(infos) < len(names):
        raise FileNotFoundError(f"predict: {root}/runs lacks run(s) "
                                f"{sorted(names - set(infos))} of the configured ladder")
    setup: dict[str, Any] = {}
    saved = root / "results.json"
    if saved.exists():
        setup = dict(json.loads(saved.read_text(encoding="utf-8")).get("setup") or {})
    setup["targets"] = list(config.targets)
    return analyze_and_report(config, root, infos, results_lib.read_rows(results_path), setup)


def study_setup(config: StudyConfig, optimizer: optim.OptimizerConfig, train_s: float,
                eval_s: float) -> dict[str, Any]:
    """The report's Setup list: the ladder, tasks, settings and this invocation's times."""
    import jax  # pylint: disable=g-import-not-at-top

    ladder = config.ladder
    return {
        "ladder": ", ".join(f"{m.name} (d_model {m.d_model}, {m.n_layers} layers, "
                            f"N={m.num_params.non_embedding:,})" for m in ladder.models),
        "token multiplier M": config.token_multiplier,
        "tokens per step": (f"{list(ladder.batch_sizes)} rows" if ladder.batch_sizes
                            else f"{ladder.template.batch_size} rows")
                           + f" x {ladder.template.seq_len} tokens",
        "corpus / vocabulary": f"{ladder.template.corpus} / {ladder.template.vocab_spec}",
        "seeds": list(ladder.seeds),
        "optimizer": (f"AdamW lr_peak {optimizer.lr_peak}, cosine to the last step"),
        "multiple-choice tasks": list(config.mc_tasks),
        "PassUntil tasks": list(config.passuntil_tasks),
        **({"greedy tasks": list(config.greedy_tasks)} if config.greedy_tasks else {}),
        "PassUntil": (f"r={config.passuntil.r}, k_max={config.passuntil.k_max} on final "
                      f"checkpoints, {config.intermediate_k_max or config.passuntil.k_max} on "
                      f"intermediate ones, temperature {config.passuntil.temperature}"),
        "instances per task": config.instances or "all",
        "train wall time (s, this invocation)": round(train_s, 1),
        "evaluation wall time (s, this invocation)": round(eval_s, 1),
        "device": f"{jax.device_count()} x {jax.devices()[0].platform}",
    }


def run_study(config: StudyConfig, workdir: str,
              optimizer: optim.OptimizerConfig = optim.OptimizerConfig(),
              mesh: state_lib.MeshConfig = state_lib.MeshConfig(),
              loop: train_loop.LoopConfig = train_loop.LoopConfig(),
              config_text: str | None = None, mode: str = "run",
              targets: Sequence[str] | None = None, probe: bool = False,
              overtrain: Any = None) -> dict[str, Any]:
    """Runs (or resumes) the whole study; returns the analysis dict.

    overtrain: an `lmscale.report.overtrain.OvertrainConfig`: run Gadre et al.'s
    over-training study instead (`config` is then unused; experiments/overtrain.gin).

    mode "plan" trains nothing and returns {"plan": text of `lmscale.report.plan.dry_run`};
    mode "predict" trains and evaluates nothing: `predict_workdir(config, workdir,
    targets)` on the finished workdir.

    Args:
      config: the ladder, tasks and evaluation settings.
      workdir: where runs, results and the report go.
      optimizer, mesh, loop: training settings shared by every run.
      config_text: the resolved gin configuration, saved with each run and the report.
      probe: time the plan with a short probe (`lmscale.report.plan.probe`): in mode
        "plan" for the printed estimate, in mode "run" for the estimate saved in plan.json
        and shown beside the measured times in the report.
    """
    if overtrain is not None:  # the over-training study (report/overtrain.py)
        from lmscale.report import overtrain as overtrain_lib  # pylint: disable=g-import-not-at-top
        return overtrain_lib.run_overtrain(overtrain, workdir, optimizer, mesh, loop,
                                           config_text, mode, probe)
    if mode == "plan":
        from lmscale.report import plan as plan_lib  # pylint: disable=g-import-not-at-top
        return {"plan": plan_lib.dry_run(config, optimizer, mesh, probe=probe, loop=loop)}
    if mode == "predict":
        return predict_workdir(config, workdir, targets)
    if mode != "run":
        raise ValueError(f"run_study: mode={mode!r}; use 'run', 'plan' or 'predict'")
    import jax

    root = pathlib.Path(workdir).absolute()
    runs_dir = root / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        if config_text:
            (root / "config.gin").write_text(config_text, encoding="utf-8")
        save_plan(config, root, optimizer, mesh, loop, probe)
    start = time.time()  # the probe is not part of the training stage
    ladder = config.ladder
    logging.info("study %r: %d runs (%d sizes x %d seeds) -> %s", config.name,
                 len(ladder.models) * len(ladder.seeds), len(ladder.models),
                 len(ladder.seeds), root)
    infos = train_ladder(config, runs_dir, optimizer, mesh, loop, config_text)
    train_s = time.time() - start
    results_path = root / runner.RESULTS_FILE
    eval_seconds = _eval_seconds(root)
    summaries: dict = {}
    results = evaluate_ladder(config, runs_dir, infos, results_path, eval_seconds,
                              on_run=functools.partial(_save_stages, root),
                              summaries=summaries)
    eval_s = time.time() - start - train_s
    if jax.process_index() != 0:
        return {}
    key = inputs_key(config, root, infos)
    if (analysis := cached_analysis(root, key)) is not None:
        logging.info("study %r: nothing new since %s was written (same runs, results, "
                     "config and code): kept", config.name, root / "report.md")
        return analysis
    fit_start = time.time()
    setup = study_setup(config, optimizer, train_s, eval_s)
    if (line := evaluation_summary(list(summaries.values()))) is not None:
        setup["evaluation (this invocation)"] = line
        logging.info("study evaluation: %s", line)
    if (line := passuntil_rates(summaries)) is not None:
        setup[PU_RATES_KEY] = line
        logging.info("study PassUntil samples/s per rung, in the study / the sampler alone "
                     "on the same shapes: %s", line)
    analysis = analyze_and_report(config, root, infos, results.rows, setup)
    _save_stages(root, eval_seconds, time.time() - fit_start)
    (root / REPORT_KEY_FILE).write_text(key + "\n", encoding="utf-8")
    logging.info("study %r: report written to %s (%.0fs in all)", config.name,
                 root / "report.md", time.time() - start)
    for p in analysis["targets"] + analysis["predictions"]:
        logging.info("prediction %s %s %s N=%d: %.6g [%.6g, %.6g] measured %s covered %s",
                     p["quantity"], p["task"], p["method"], p["N"], p["predicted"],
                     *p["interval"], p["measured"], p["covered"])
    return analysis


def load_gin(gin_files: Sequence[str], gin_bindings: Sequence[str] = (),
             search_path: str | None = None) -> dict[str, Any]:
    """Parses study gin files; returns {"study_config", "optimizer", "mesh_config"} as the
    study binary would build them (its `run_study` bindings), nothing trained."""
    import gin

    from lmscale.train import optim
    from lmscale.train import state as state_lib

    if search_path:
        gin.add_config_file_search_path(search_path)
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings),
                                        finalize_config=False)
    return {"study_config": gin.get_configurable(StudyConfig)(),
            "optimizer": gin.get_configurable(optim.OptimizerConfig)(),
            "mesh_config": gin.get_configurable(state_lib.MeshConfig)()}
