"""Bad train configs fail before compiling, naming the binding and what is allowed.

Drives the train binary's own steps in-process (`parse_gin` -> `configured(RunSpec)()` ->
`configured(loop.train)`), so each case costs milliseconds; `test_train.py` runs a few of
them through the real binary.
"""
import re

import gin
import pytest

from lmscale.main import _cli
from lmscale.data.vocab import get_vocabulary
from lmscale.models.config import ConfigError, ModelConfig
from lmscale.train import loop
from lmscale.train.spec import RunSpec

FILES = ["experiments/runs/train.gin", "experiments/models/tiny.gin"]
BASE = ["MODEL = @tiny_s/model_config.ModelConfig()", "TOKEN_MULTIPLIER = 0.2",
        "BATCH_SIZE = 8", "SEQ_LEN = 32"]


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


def _train(bindings, workdir):
    _cli.parse_gin(FILES, BASE + bindings)
    spec = _cli.configured(RunSpec)()
    return _cli.configured(loop.train)(spec=spec, workdir=str(workdir))


@pytest.mark.parametrize("binding, expected", [
    ("tiny_s/model_config.ModelConfig.n_kv_heads = 3",
     [r"ModelConfig.n_heads=2 is not divisible by ModelConfig.n_kv_heads=3", "scope 'tiny_s'"]),
    ("tiny_s/model_config.ModelConfig.n_heads = 3",
     [r"ModelConfig.d_model=32 is not divisible by ModelConfig.n_heads=3", "scope 'tiny_s'"]),
    ("train_state.MeshConfig.data = 3", [r"data=3", r"does not divide the device count 8"]),
    ("train_state.MeshConfig.fsdp = 3", [r"fsdp=3 x tensor=1 = 3 devices, but 8 are available"]),
    ("BATCH_SIZE = 12", [r"RunSpec.batch_size=12 is not divisible", r"size 8"]),
    ("optim.OptimizerConfig.warmup_fraction = 0.99",
     [r"OptimizerConfig.warmup_fraction=0.99 gives 16 warmup steps", "num_steps=17"]),
    ("model_config.ModelConfig.vocab_size = 256",
     [r"ModelConfig.vocab_size=256 is smaller than", r"'byte'", r"259 ids"]),
    ("run_spec.RunSpec.corpus = 'no_such_corpus'",
     [r"RunSpec.corpus='no_such_corpus'", r"lmscale_stdlib_py"]),
    ("run_spec.RunSpec.vocab_spec = 'bpe32k'",
     [r"RunSpec.vocab_spec='bpe32k'", r"expected 'byte'"]),
    ("train_loop.LoopConfig.validation = [('held_out', 'no_such_task', 'validation')]",
     [r"LoopConfig.validation\[0\] \('held_out'\)='no_such_task'"]),
])
def test_bad_binding_fails_before_anything_is_built(tmp_path, binding, expected):
    with pytest.raises(ConfigError) as err:
        _train([binding], tmp_path)
    for pattern in expected:
        assert re.search(pattern, str(err.value)), str(err.value)
    assert not list(tmp_path.iterdir())  # checked before the run directory is written


@pytest.mark.parametrize("binding, name", [
    ("model_config.ModelConfig.n_kv_head = 1", "n_kv_head"),
    ("train_loop.LoopConfig.save_every = 1", "save_every"),
    ("no_such_module.Thing.x = 1", "no_such_module"),
])
def test_unknown_binding_is_named(binding, name):
    with pytest.raises(ValueError, match=name):
        _cli.parse_gin(FILES, BASE + [binding])


def test_tiny_models_cover_the_byte_vocabulary():
    _cli.parse_gin(FILES, BASE)
    size = get_vocabulary("byte").vocab_size
    for scope in ("tiny_s", "tiny_m", "tiny_l"):
        with gin.config_scope(scope):
            model = _cli.configured(ModelConfig)()
        assert model.vocab_size >= size, scope
