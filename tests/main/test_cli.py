"""A newcomer's mistakes fail fast, before anything trains, with the culprit named."""
from tests.conftest import FAST_COMPILE_ENV
import os
import pathlib
import re
import subprocess
import sys
import time

import gin
import pytest

from lmscale.main import _cli
from lmscale.models import ConfigError
from lmscale.train.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAIN = ["experiments/runs/train.gin", "experiments/models/tiny.gin"]
SET = ["MODEL = @tiny_s/model_config.ModelConfig()", "TOKEN_MULTIPLIER = 2",
       "BATCH_SIZE = 8", "SEQ_LEN = 64"]


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_gin_shorthands_become_bindings_in_order():
    argv = ["prog", "--gin.SEQ_LEN=64", "--workdir=/w",
            "--gin.ladder.LadderConfig.seeds=[0, 1]", "--", "--gin.X=1"]
    assert _cli.gin_shorthand(argv) == [
        "prog", "--gin_bindings=SEQ_LEN = 64", "--workdir=/w",
        "--gin_bindings=ladder.LadderConfig.seeds = [0, 1]", "--", "--gin.X=1"]
    with pytest.raises(_cli.GinConfigError, match="--gin.NAME=value"):
        _cli.gin_shorthand(["prog", "--gin.SEQ_LEN"])


def test_missing_gin_file_names_file_and_search_path():
    with pytest.raises(_cli.GinConfigError) as err:
        _cli.parse_gin(["experiments/typo.gin"], [])
    msg = str(err.value)
    assert "'experiments/typo.gin' not found" in msg
    assert str(ROOT / "experiments/typo.gin") in msg and "repository root" in msg


def test_missing_include_and_syntax_error_name_file_and_line(tmp_path):
    bad_include = tmp_path / "inc.gin"
    bad_include.write_text("include 'experiments/nope.gin'\n")
    with pytest.raises(_cli.GinConfigError, match=r"included gin file 'experiments/nope.gin' "
                       r"not found"):
        _cli.parse_gin([str(bad_include)], [])
    bad_syntax = tmp_path / "syntax.gin"
    bad_syntax.write_text("from __gin__ import dynamic_registration\n"
                          "import lmscale.train.spec as run_spec\n\n"
                          "run_spec.RunSpec.batch_size = = 2\n")
    with pytest.raises(_cli.GinConfigError, match=rf"{bad_syntax}.*line 4"):
        _cli.parse_gin([str(bad_syntax)], [])
    with pytest.raises(_cli.GinConfigError, match=r"--gin_bindings='SEQ_LEN = \(1,'"):
        _cli.parse_gin(TRAIN, ["SEQ_LEN = (1,"])


def test_misspelled_parameter_names_the_binding():
    with pytest.raises(ValueError, match=r"RunSpec.batchsize = 3"):
        _cli.parse_gin(TRAIN, SET + ["run_spec.RunSpec.batchsize = 3"])


def test_unknown_command_line_macro_suggests_the_known_one():
    with pytest.raises(_cli.GinConfigError, match=r"'TOKN_MULTIPLIER'.*did you mean "
                       r"TOKEN_MULTIPLIER\?"):
        _cli.parse_gin(TRAIN, SET + ["TOKN_MULTIPLIER = 3"])
    _cli.parse_gin(TRAIN, SET + ["TOKEN_MULTIPLIER = 3"])  # a used macro is fine


def test_unset_required_macro_is_named_not_gins_placeholder():
    _cli.parse_gin(TRAIN, SET[:2])
    with pytest.raises(_cli.GinConfigError) as err:
        _cli.configured(RunSpec)()
    msg = str(err.value)
    assert "BATCH_SIZE, SEQ_LEN" in msg and "RunSpec.seq_len needs macro SEQ_LEN" in msg
    assert "object at 0x" not in msg
    # Parameters the caller passes (as the ladder passes model and M) are not required.
    gin.clear_config()
    _cli.parse_gin(TRAIN, SET[2:])
    from lmscale.models import ModelConfig
    model = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, head_dim=16,
                        d_ff=64, max_seq_len=64, name="m")
    assert _cli.configured(RunSpec)(model=model, token_multiplier=1.0).batch_size == 8


def test_negative_batch_size_names_the_field():
    _cli.parse_gin(TRAIN, SET + ["BATCH_SIZE = -8"])
    with pytest.raises(ConfigError, match=r"RunSpec.batch_size=-8"):
        _cli.configured(RunSpec)()


def test_preflight_reports_every_unknown_name_at_once_with_close_matches():
    with pytest.raises(ConfigError) as err:
        _cli.preflight(tasks=["py_next_line_mcc", "py_identifier_copy:n4"],
                       corpora=["lmscale_stdlib"], vocab_specs=["bpe32k"],
                       where={"py_next_line_mcc": "StudyConfig.mc_tasks='py_next_line_mcc'"})
    msg = str(err.value)
    assert msg.startswith("3 unknown name(s)")
    assert "StudyConfig.mc_tasks='py_next_line_mcc'" in msg and "'py_next_line_mc'" in msg
    assert "did you mean lmscale_stdlib_py" in msg and "'bpe32k'" in msg
    _cli.preflight(tasks=["py_identifier_copy:n4"], corpora=["lmscale_stdlib_py"])


def _env():
    """The user's environment: no platform or log settings from the test setup."""
    drop = ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return dict(env, PYTHONPATH=str(ROOT), **FAST_COMPILE_ENV)


def _binary(name, *args, timeout=120):
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", f"lmscale.main.{name}", *args], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - start


def test_binary_with_a_typo_in_the_gin_file_fails_in_seconds(tmp_path):
    proc, wall = _binary("train", "--gin_file=experiments/typo.gin", f"--workdir={tmp_path}")
    assert proc.returncode != 0
    assert "FATAL GinConfigError: gin file 'experiments/typo.gin' not found" in proc.stderr
    assert "Traceback" not in proc.stderr and wall < 60
    assert "cuInit" not in proc.stderr and "Unable to initialize backend" not in proc.stderr


def test_console_is_quiet_and_the_log_file_holds_the_detail(tmp_path):
    bad = ["--gin_file=experiments/typo.gin", f"--workdir={tmp_path}"]
    proc, _ = _binary("train", *bad)
    logs = sorted((tmp_path / "logs").glob("train.*.log"))
    assert len(logs) == 1, list(tmp_path.rglob("*"))
    first, *rest = proc.stderr.splitlines()
    assert first.startswith(f"train: log in {logs[0]}; compilation cache "
                            f"{tmp_path / '.jax_cache'}"), proc.stderr
    detail = logs[0].read_text()
    assert "host allocator tuned" in detail and "process 0 of 1" in detail
    assert "host allocator tuned" not in proc.stderr
    assert "FATAL GinConfigError" in "\n".join(rest) and len(rest) <= 3, rest  # errors stay
    assert proc.stdout == ""
    # --console=info (or absl's -v 0) brings the library detail back; '' turns the cache
    # off.
    proc, _ = _binary("train", *bad, "-v", "0", "--compilation_cache_dir=")
    assert "compilation cache off" in proc.stderr.splitlines()[0]
    assert "host allocator tuned" in proc.stderr and "process 0 of 1" in proc.stderr


def test_study_with_unknown_names_fails_before_training(tmp_path):
    proc, wall = _binary("study", "--gin_file=experiments/default.gin", f"--workdir={tmp_path}",
                         "--gin.MC_TASKS=['py_next_line_mcc']",
                         "--gin.run_spec.RunSpec.corpus='lmscale_stdlib'")
    assert proc.returncode != 0, proc.stderr[-2000:]
    err = proc.stderr
    assert "2 unknown name(s)" in err, err[-2000:]
    assert "StudyConfig.mc_tasks='py_next_line_mcc'" in err and "'py_next_line_mc'" in err
    assert "RunSpec.corpus='lmscale_stdlib'" in err and "lmscale_stdlib_py" in err
    assert not (tmp_path / "runs").exists() and wall < 90


def test_help_lists_the_common_flags():
    proc, _ = _binary("ladder", "--help")  # absl exits 1 after --help
    for flag in ("--gin_file", "--gin_bindings", "--workdir", "--coordinator_address"):
        assert flag in proc.stdout, proc.stdout


@pytest.mark.slow
def test_train_docstring_example_runs_quietly_on_cpu(tmp_path):
    from lmscale.main import train
    line = " ".join(train.__doc__.split("\n\n")[1].split())
    args = re.findall(r"(--\S+(?:\s+=\s+\S+)?)", line.replace("\\", ""))
    args = [a.replace('"', "") for a in args if not a.startswith("--workdir")]
    args = [a if "TOKEN_MULTIPLIER" not in a else "--gin.TOKEN_MULTIPLIER=0.2" for a in args]
    proc, _ = _binary("train", *args, f"--workdir={tmp_path}",
                      "--gin.train_loop.LoopConfig.eval_batches=1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cuInit" not in proc.stderr and "Unable to initialize backend" not in proc.stderr
    console = (proc.stdout + proc.stderr).splitlines()
    assert len(console) < 20 and not any("orbax" in line for line in console), console
    assert list((tmp_path / ".jax_cache").iterdir())  # the persistent compilation cache
