"""Mesh, batch, sampler and workdir mistakes fail at start-up, before any rung trains,
with the field, the run and what to do named (lmscale.train.preflight via _cli)."""
from tests.conftest import FAST_COMPILE_ENV
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import gin
import jax
import pytest
from absl import app

from lmscale.main import _cli
from lmscale.models import ConfigError, ModelConfig
from lmscale.train import loop, optim, preflight, state
from lmscale.train.ladder import LadderConfig
from lmscale.train.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _model(width=32, heads=4, name=None, max_seq_len=128):
    return ModelConfig(vocab_size=259, d_model=width, n_layers=1, n_heads=heads, head_dim=8,
                       d_ff=2 * width, max_seq_len=max_seq_len, name=name or f"w{width}")


def _spec(batch=16, **kw):
    return RunSpec(model=_model(**kw), seq_len=64, batch_size=batch, token_multiplier=4.0)


def _problems(specs, mesh=state.MeshConfig(), opt=optim.OptimizerConfig(),
              loop_config=loop.LoopConfig(), devices=8, processes=1):
    return preflight.check_runs(specs, opt, mesh, loop_config, devices, processes,
                                check_data=False)


def test_the_test_process_has_8_devices():
    assert jax.device_count() == 8  # tests/conftest.py forces them; the checks below use 8


def test_mesh_product_must_match_the_device_count():
    (msg,) = _problems([_spec()], mesh=state.MeshConfig(data=3, fsdp=1, tensor=1))
    assert msg.startswith("MeshConfig data=3 x fsdp=1 x tensor=1 = 3 devices, but 8 are "
                          "available: set MeshConfig.data x fsdp x tensor = 8"), msg
    (msg,) = _problems([_spec()], mesh=state.MeshConfig(data=3, fsdp=-1, tensor=1))
    assert "MeshConfig.fsdp=-1" in msg and "does not divide the device count 8" in msg


def test_batch_must_split_over_data_x_fsdp_and_every_bad_rung_is_named_at_once():
    specs = [_spec(batch=16, width=32), _spec(batch=12, width=48), _spec(batch=20, width=64)]
    problems = _problems(specs, mesh=state.MeshConfig(data=2, fsdp=-1, tensor=1))
    assert problems == [
        f"RunSpec.batch_size={b} is not divisible by the batch mesh axes data x fsdp of "
        f"total size 8 (run {name}_M4; mesh data=2 x fsdp=4 x tensor=1 over 8 devices): use "
        f"a multiple of 8, or shrink those MeshConfig axes" for b, name in ((12, "w48"),
                                                                             (20, "w64"))]
    assert _problems(specs[:1]) == []


def test_heads_must_split_over_the_tensor_axis():
    (msg,) = _problems([_spec(heads=6, width=48)], mesh=state.MeshConfig(fsdp=-1, tensor=4))
    assert msg == ("ModelConfig.n_heads=6 (model w48) is not divisible by the tensor mesh "
                   "axes tensor = 4: attention would not be split (every device computes "
                   "every head); set MeshConfig.tensor to one of [1, 2, 3, 6], or pick "
                   "n_heads divisible by 4")
    assert _problems([_spec(heads=4)], mesh=state.MeshConfig(fsdp=-1, tensor=4)) == []


def test_warmup_data_shards_and_noise_scale_are_checked_per_run():
    problems = _problems([_spec(batch=24)], mesh=state.MeshConfig(data=1, fsdp=1, tensor=-1),
                         opt=optim.OptimizerConfig(warmup_steps=10_000),
                         loop_config=loop.LoopConfig(data_shards=5))
    assert len(problems) == 3, problems
    assert "OptimizerConfig.warmup_steps=10000 gives 10000 warmup steps" in problems[1]
    assert "lower the warmup or raise the token budget" in problems[1]
    assert problems[2].startswith("RunSpec.batch_size=24 (run w32_M4) is not divisible by "
                                  "the data shards LoopConfig.data_shards=5")
    odd = _problems([_spec(batch=7)], mesh=state.MeshConfig(data=1, fsdp=1, tensor=-1),
                    devices=8)
    assert any("is odd, but LoopConfig.noise_scale splits" in p for p in odd), odd


def test_data_problems_are_reported_with_the_field():
    spec = RunSpec(model=_model(), seq_len=64, batch_size=8, token_multiplier=4.0,
                   corpus="lmscale_stdlib")
    (msg,) = preflight.check_runs([spec], optim.OptimizerConfig(), state.MeshConfig(),
                                  loop.LoopConfig(), 8)
    assert msg.startswith("RunSpec.corpus='lmscale_stdlib': "), msg


def test_seq_len_longer_than_a_rung_s_context_names_both_fields():
    ladder = LadderConfig(template=_spec(), models=(_model(32), _model(48, max_seq_len=32)))
    with pytest.raises(ConfigError, match=r"RunSpec.seq_len=64 exceeds ModelConfig."
                       r"max_seq_len=32 \(model w48\): lower RunSpec.seq_len or raise"):
        ladder.specs()


def test_sampler_slots_and_prompt_room():
    assert preflight.check_sampler([], 64, 64, {}) == []
    (msg,) = preflight.check_sampler([], 256, 64, {})
    assert msg.startswith("PassUntilConfig.num_slots=256 > PassUntilConfig.batch_size=64: "
                          "a draw of 64 samples keeps at most 64 slots busy"), msg
    (msg,) = preflight.check_sampler([_model(max_seq_len=32)], 8, 8, {"t": 31, "u": 8})
    assert msg == ("ModelConfig.max_seq_len=32 (model w32) leaves no room for a prompt next "
                   "to task 't''s max_new_tokens=31: raise max_seq_len above 32 or drop the "
                   "task")


def test_existing_run_of_another_configuration_is_named(tmp_path):
    spec = _spec(batch=16)
    run_dir = tmp_path / "runs" / spec.name
    run_dir.mkdir(parents=True)
    fields = dict(batch_size=8, seq_len=64, corpus=spec.corpus, vocab_spec="byte", seed=0,
                  num_steps=spec.num_steps,
                  model_config={**dataclasses.asdict(spec.model), "d_ff": 48})
    (run_dir / "run.json").write_text(json.dumps(fields))
    (msg,) = preflight.check_existing_runs([spec], [tmp_path, tmp_path / "runs"])
    assert msg == (f"{run_dir}: an existing run of another configuration (batch_size=8 "
                   f"(now 16), ModelConfig.d_ff=48 (now 64)); it would be skipped or "
                   f"resumed as if it matched: use a fresh --workdir, or delete {run_dir}")
    fields.update(batch_size=16, model_config=dataclasses.asdict(spec.model))
    (run_dir / "run.json").write_text(json.dumps(fields))
    assert preflight.check_existing_runs([spec], [tmp_path / "runs"]) == []


def test_workdir_that_is_a_file_or_under_a_file_is_rejected(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(app.UsageError, match=rf"--workdir={afile} is a file, not a "
                       rf"directory"):
        _cli.check_workdir(str(afile))
    with pytest.raises(app.UsageError, match=rf"{afile} is a file, so the directory cannot "
                       rf"be created"):
        _cli.check_workdir(str(afile / "runs"))
    _cli.check_workdir(str(tmp_path / "new" / "dir"))


def test_configured_study_checks_every_rung_and_the_sampler_before_the_call(tmp_path):
    from lmscale.report import study
    _cli.parse_gin(["experiments/default.gin"],
                   ["runner.PassUntilConfig.num_slots = 1024",
                    "train_state.MeshConfig.tensor = 2"])
    with pytest.raises(ConfigError) as err:
        _cli.configured(study.run_study)(workdir=str(tmp_path))
    msg = str(err.value)
    # 8 devices, tensor=2 -> fsdp=4: every batch (8..32) splits; 3 and 5 heads (w48, w80)
    # do not split over tensor; the sampler's 1024 slots exceed its 512-sample draws.
    assert msg.startswith("3 problem(s) found at start-up, before anything ran:"), msg
    assert "ModelConfig.n_heads=3 (model w48)" in msg and "n_heads=5 (model w80)" in msg
    assert "PassUntilConfig.num_slots=1024 > PassUntilConfig.batch_size=512" in msg
    assert not (tmp_path / "runs").exists()


def _env(devices):
    drop = ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return dict(env, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                **FAST_COMPILE_ENV)


def test_study_binary_on_8_devices_names_the_bad_rung_before_training(tmp_path):
    """The default study's batches (8, 12, 16, 20, 24) on 8 devices (fsdp=8): rungs w48's
    12 and w80's 20 do not split; before this check, w32 trained first and w48 then failed.
    Both are named in one message."""
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.main.study", "--gin_file=experiments/default.gin",
         f"--workdir={tmp_path}"], cwd=ROOT, env=_env(8), capture_output=True, text=True,
        timeout=300)
    wall = time.time() - start
    assert proc.returncode != 0
    assert "FATAL ConfigError: 2 problem(s) found at start-up" in proc.stderr, proc.stderr
    for batch, run in ((12, "w48_M9_s0"), (20, "w80_M9_s0")):
        assert (f"RunSpec.batch_size={batch} is not divisible by the batch mesh axes data x "
                f"fsdp of total size 8 (run {run};") in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert "Traceback" not in proc.stderr and wall < 120, wall


def test_task_typo_inside_a_gin_list_is_named_before_the_study_runs(tmp_path):
    from lmscale.report import study
    _cli.parse_gin(["experiments/default.gin"],
                   ['MC_TASKS = ["py_next_line_mcc:n200"]'])
    with pytest.raises(ConfigError) as err:
        _cli.configured(study.run_study)(workdir=str(tmp_path))
    msg = str(err.value)
    assert msg.startswith("1 unknown name(s) in the configuration"), msg
    assert "StudyConfig.mc_tasks='py_next_line_mcc:n200'" in msg and "py_next_line_mc" in msg
    assert not (tmp_path / "runs").exists()


def test_negative_seed_and_too_many_held_out_rungs_are_named(tmp_path):
    from lmscale.report import study
    _cli.parse_gin(["experiments/default.gin"], ["ladder.LadderConfig.seeds = [0, -1]"])
    with pytest.raises(ConfigError, match=r"LadderConfig.seeds=\[0, -1\]: entry 1 \(-1\): "
                       r"expected >= 0"):
        _cli.configured(study.run_study)(workdir=str(tmp_path))
    gin.clear_config()
    _cli.parse_gin(["experiments/default.gin"], ["study.StudyConfig.held_out = 5"])
    with pytest.raises(ConfigError, match=r"StudyConfig.ladder.models has 5 model\(s\); with "
                       r"held_out=5 the loss law needs >= 8"):
        _cli.configured(study.run_study)(workdir=str(tmp_path))


def test_empty_model_list_and_missing_vocabulary_file_are_named():
    with pytest.raises(ConfigError, match=r"LadderConfig.models is empty"):
        LadderConfig(template=_spec(), models=())
    with pytest.raises(ConfigError, match=r"'/nope/spm.model': SentencePiece model not "
                       r"found: /nope/spm.model"):
        _cli.preflight(vocab_specs=["/nope/spm.model"])


def test_structure_checks_skip_jobs_that_train_nothing():
    bad = {"spec": _spec(batch=12), "mesh": state.MeshConfig(data=1, fsdp=-1, tensor=1)}
    with pytest.raises(ConfigError, match=r"RunSpec.batch_size=12 is not .* \(run w32_M4;"):
        _cli.check_structure(bad)
    for mode in ("plan", "predict"):  # a plan may be for another machine's mesh
        _cli.check_structure({**bad, "mode": mode})
