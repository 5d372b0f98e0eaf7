"""The evaluation probe: the study's own evaluator on a stand-in checkpoint of one rung.

Stage: report (runs JAX). `time_evaluation(rung, params, setup)` runs
`lmscale.eval.runner.evaluate` (plan + execute, the code the study runs) on a stand-in
checkpoint of the rung's shape (`params`: the train probe's, a few steps from their
initialisation) with small pieces of the real work, each twice in a row: the first call
pays the compiles, the second (same process, a fresh results file) only the run, so

  compile = what JAX reports compiling in the first call (`EvalSummary.compile_s`);
  run rates = the second call's wall time / the work it did.

The pieces: the validation pass over 1 and 5 batches of the real held-out stream (per
batch and per checkpoint costs); the most common real scorer batch shape of each
multiple-choice task, one batch and then two (compile per scorer program, seconds per
batch and per unit); a few real instances of each PassUntil
task on an intermediate and on the final checkpoint, so both of the sampler's paths run
at the configured slots, draw batch and prompts per call (their compiles, seconds per
sample and per instance). `evaltime.evaluation_seconds` scales them by the plan's work.

The probe leaves nothing behind for the study: results go to a temporary directory.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Any, Sequence

from absl import logging

from lmscale.report.plan import evaltime

VALIDATION_BATCHES = (1, 5)  # two sizes: per-batch and per-checkpoint costs apart
PROBE_STEP = 1  # the stand-in run's intermediate checkpoint


@dataclasses.dataclass(frozen=True)
class EvalSetup:
    """The study's evaluation settings, as the probe runs them.

    Attributes:
      mc_tasks, passuntil_tasks: registered task names.
      passuntil, intermediate_passuntil: `runner.PassUntilConfig`s of final and other
        checkpoints.
      validation: `runner.ValidationConfig`.
      corpus, vocab_spec: the runs' corpus and vocabulary.
      limit: instances per task (None: all).
      passuntil_instances: real instances per PassUntil task the probe samples (None:
        the intermediate prompts per call, at most 4).
    """

    mc_tasks: Sequence[str] = ()
    passuntil_tasks: Sequence[str] = ()
    passuntil: Any = None
    intermediate_passuntil: Any = None
    validation: Any = None
    corpus: str = ""
    vocab_spec: str = "byte"
    limit: int | None = None
    passuntil_instances: int | None = None


def _record(rung, setup: EvalSetup):
    from lmscale.models.config import count_params  # pylint: disable=g-import-not-at-top
    from lmscale.train.record import RunRecord, loss_unit  # pylint: disable=g-import-not-at-top

    n = count_params(rung.model)
    return RunRecord(
        run_name=f"probe_{rung.name}", model_config=dataclasses.asdict(rung.model),
        num_params=n.total, num_params_non_embedding=n.non_embedding, num_tokens=rung.tokens,
        flops=6.0 * n.non_embedding * rung.tokens, token_multiplier=rung.token_multiplier,
        tokens_per_step=rung.tokens_per_step, batch_size=rung.batch_size,
        seq_len=rung.seq_len, num_steps=max(rung.num_steps, PROBE_STEP + 1),
        vocab_spec=setup.vocab_spec, loss_unit=loss_unit(setup.vocab_spec),
        corpus=setup.corpus, seed=0, status="done",
        checkpoints=[PROBE_STEP, max(rung.num_steps, PROBE_STEP + 1)])


class _StandIn:
    """A run "directory" whose checkpoints all restore `params`; evaluates into temporary
    results files."""

    def __init__(self, rung, params, setup: EvalSetup, tmp: pathlib.Path):
        import flax.linen as nn  # pylint: disable=g-import-not-at-top

        from lmscale.eval import runner  # pylint: disable=g-import-not-at-top

        self.record, self.setup, self.tmp, self.calls = _record(rung, setup), setup, tmp, 0
        params = nn.unbox(params)
        self.source = runner.CheckpointSource(
            load_record=lambda _: self.record, list_steps=lambda _: self.record.checkpoints,
            restore_params=lambda _d, _s, _c, mesh=None: params)

    @property
    def final(self) -> int:
        return self.record.num_steps

    def evaluate(self, tasks, steps, validation=None):
        """`runner.evaluate` of `tasks` on `steps`; returns its `EvalSummary`."""
        from lmscale.eval import runner  # pylint: disable=g-import-not-at-top

        self.calls += 1
        validation = validation or dataclasses.replace(self.setup.validation, enabled=False)
        results = runner.evaluate(
            [self.record.run_name], tasks, source=self.source, steps=steps,
            results_path=str(self.tmp / f"results_{self.calls}.jsonl"),
            passuntil_config=self.setup.passuntil,
            intermediate_passuntil=self.setup.intermediate_passuntil, validation=validation)
        return results.summary


def _compile_s(cold, warm) -> float:
    """Compile seconds of a first call: what JAX reported compiling in it (tracing,
    lowering, compiling: `EvalSummary.compile_s`) less what the second call compiled
    (nothing, unless a program depends on the data). The wall-time difference of the two
    calls would also count any burst of load on a shared machine."""
    return max(0.0, cold.compile_s - warm.compile_s)


def _twice(fn):
    """(first call's summary, second call's summary) of `fn()`."""
    return fn(), fn()


def _subset(task, instances):
    """`task` restricted to `instances` (a real task's own instances)."""
    chosen = list(instances)
    return dataclasses.replace(task, loader=lambda split: chosen, filters=(), num_test=None)


def _questions(task, instances, vocab, mc: bool):
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    return [scorer.encode_question(vocab, i.id, i.prompt, i.choices if mc else
                                   [i.target or " "], i.gold if mc else 0) for i in instances]


def _mc_probe(model, names, setup: EvalSetup, stand_in: _StandIn) -> dict[str, float]:
    """Scorer rates from the most common real batch shape of each multiple-choice task:
    one batch cold and warm (compile per program), then two batches of that shape warm
    (seconds per batch apart from the unit's fixed cost per checkpoint)."""
    from lmscale.data import registry  # pylint: disable=g-import-not-at-top
    from lmscale.data.vocab import get_vocabulary  # pylint: disable=g-import-not-at-top
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    vocab = get_vocabulary(setup.vocab_spec)
    one, two = [], []
    for name in names:
        task = registry.get_eval_task(name)
        instances = task.instances(split="test", limit=setup.limit)
        questions = _questions(task, instances, vocab, mc=True)
        s = scorer.Scorer(model, None)
        groups, shapes = s.batch_indices(questions), s.batch_shapes(questions)
        common = max(sorted(set(shapes)), key=shapes.count)
        same = [g for g, shape in zip(groups, shapes) if shape == common][:2]
        one.append(_subset(task, [instances[i] for i in sorted(same[0])]))
        two.append(_subset(task, [instances[i] for i in sorted(i for g in same for i in g)]))
        if len(same) < 2:
            two[-1] = one[-1]
    final = [stand_in.final]
    cold, warm = _twice(lambda: stand_in.evaluate(one, final))
    warm_two = stand_in.evaluate(two, final)
    extra = sum(len(b.instances(split="test")) > len(a.instances(split="test"))
                for a, b in zip(one, two))
    per_batch = (max(0.0, warm_two.wall_s - warm.wall_s) / extra if extra
                 else warm.wall_s / len(one))
    return {"score_compile_s": _compile_s(cold, warm) / len(one),
            "score_batch_s": per_batch,
            "score_fixed_s": max(0.0, warm.wall_s - len(one) * per_batch) / len(one)}


def _mean_sample_tokens(model, params, task, instances, setup: EvalSetup) -> float:
    """Mean tokens of the stand-in's samples of the probe's first prompt, with the final
    path's sampler as the evaluator builds it (so its programs are already compiled)."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    from lmscale.data.vocab import get_vocabulary  # pylint: disable=g-import-not-at-top
    from lmscale.eval import sampler as sampler_lib  # pylint: disable=g-import-not-at-top

    vocab, pu = get_vocabulary(setup.vocab_spec), setup.passuntil
    room = model.max_seq_len - task.max_new_tokens - 1
    prompts = [np.concatenate([[0], np.asarray(vocab.encode(i.prompt), np.int32).reshape(-1)[
        -room:]]).astype(np.int32) for i in instances]
    sampler = sampler_lib.Sampler(
        params, model, vocab, method=pu.method, num_slots=pu.num_slots,
        max_new_tokens=task.max_new_tokens, stop_strings=task.stop_strings,
        min_prompt_bucket=sampler_lib.bucket(max(p.size for p in prompts)),
        max_samples_per_call=max(4096, pu.per_call() * pu.batch_size))
    out = sampler.sample(prompts[0], min(pu.batch_size, pu.k_max), seed=0)
    return float(np.mean(np.maximum(out.lengths, 1)))


def _passuntil_probe(model, params, name: str, setup: EvalSetup, stand_in: _StandIn,
                     score_compile_s: float, rates: dict) -> None:
    """Both sampler paths of one PassUntil task on a few of its real instances."""
    from lmscale.data import registry  # pylint: disable=g-import-not-at-top

    task = registry.get_eval_task(name)
    instances = task.instances(split="test", limit=setup.limit)
    count = setup.passuntil_instances or min(4, setup.intermediate_passuntil.per_call())
    subset = _subset(task, instances[:max(1, count)])
    n = len(subset.instances(split="test"))
    for path, step, extra_compile in ((evaltime.INTERMEDIATE, PROBE_STEP, score_compile_s),
                                      (evaltime.FINAL, stand_in.final, 0.0)):
        cold, warm = _twice(lambda: stand_in.evaluate([subset], [step]))
        rates["sampler_compile_s"].setdefault(name, {})[path] = max(
            0.0, _compile_s(cold, warm) - extra_compile)
        rates["sample_s"].setdefault(name, {})[path] = (
            warm.pu_sample_s / warm.pu_samples if warm.pu_samples else 0.0)
        rates["instance_s"].setdefault(name, {})[path] = max(
            0.0, warm.wall_s - warm.pu_sample_s) / n
    rates["sample_tokens"][name] = _mean_sample_tokens(model, params, task,
                                                       subset.instances(split="test"), setup)


def time_evaluation(rung, params, setup: EvalSetup) -> evaltime.EvalRates:
    """The evaluator's rates on `rung`'s shape (see the module docstring)."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top

    model = rung.model
    rates: dict[str, Any] = {"sampler_compile_s": {}, "sample_s": {}, "instance_s": {},
                             "sample_tokens": {}}
    with tempfile.TemporaryDirectory(prefix="lmscale_probe_") as tmp:
        stand_in = _StandIn(rung, params, setup, pathlib.Path(tmp))
        if setup.validation is not None and setup.validation.enabled:
            one, three = (dataclasses.replace(setup.validation, max_batches=b)
                          for b in VALIDATION_BATCHES)
            cold = stand_in.evaluate([], [stand_in.final], one)
            warm_one = stand_in.evaluate([], [stand_in.final], one)
            warm_three = stand_in.evaluate([], [stand_in.final], three)
            per_batch = max(0.0, (warm_three.wall_s - warm_one.wall_s)
                            / (VALIDATION_BATCHES[1] - VALIDATION_BATCHES[0]))
            rates.update(validation_compile_s=_compile_s(cold, warm_one),
                         validation_batch_s=per_batch,
                         validation_fixed_s=max(0.0, warm_one.wall_s - per_batch))
        if setup.mc_tasks:
            rates.update(_mc_probe(model, setup.mc_tasks, setup, stand_in))
        score_compile_s = rates.get("score_compile_s", 0.0)
        for name in setup.passuntil_tasks:
            _passuntil_probe(model, nn.unbox(params), name, setup, stand_in,
                             score_compile_s, rates)
    logging.info("probe %s evaluation rates: %s", rung.name, rates)
    return evaltime.EvalRates(**rates)
