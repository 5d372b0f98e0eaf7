"""RunSpec: steps, tokens and compute from (model, M or D, batch, sequence length)."""
import math

import pytest

from lmscale.models.config import ConfigError, count_params
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord
from lmscale.train.spec import RunSpec


def test_steps_tokens_and_flops_from_token_multiplier():
    model = tiny_config()
    spec = RunSpec(model, seq_len=32, batch_size=4, token_multiplier=20)
    n = count_params(model).non_embedding
    assert spec.num_params_non_embedding == n
    assert spec.num_params == count_params(model).total > n
    assert spec.tokens_per_step == 128
    assert spec.num_steps == math.ceil(20 * n / 128)
    assert spec.total_tokens == spec.num_steps * 128 >= 20 * n
    assert spec.flops == 6.0 * n * spec.total_tokens
    assert spec.name == "tiny_M20"
    summary = RunRecord.from_spec(spec)
    assert summary.num_tokens == spec.total_tokens and summary.num_steps == spec.num_steps
    assert summary.flops == spec.flops and summary.loss_unit == "nats/byte"


def test_steps_from_token_count_round_up():
    spec = RunSpec(tiny_config(), seq_len=10, batch_size=3, num_tokens=61)
    assert spec.num_steps == 3  # 61 / 30 -> 3 whole steps
    assert spec.name == "tiny_D61"


@pytest.mark.parametrize("kwargs, field", [
    (dict(token_multiplier=1, num_tokens=5), "token_multiplier"),
    (dict(), "num_tokens"),
    (dict(token_multiplier=-1), "token_multiplier"),
    (dict(token_multiplier=1, batch_size=0), "batch_size"),
    (dict(token_multiplier=1, seq_len=1000), "seq_len"),
])
def test_bad_spec_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        RunSpec(tiny_config(), **kwargs)
