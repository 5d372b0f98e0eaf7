"""Schedule: warmup honoured, cosine minimum exactly at the last step; muP-style option."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models.config import ConfigError
from lmscale.models.decoder import init_params
from lmscale.testing import tiny_config
from lmscale.train import optim

import flax.linen as nn


@pytest.mark.parametrize("num_steps, warmup", [(50, 5), (7, 2), (100, 0)])
def test_lr_minimum_at_last_step_and_warmup_honoured(num_steps, warmup):
    config = optim.OptimizerConfig(lr_peak=1e-2, lr_min_ratio=0.1, warmup_steps=warmup)
    schedule = optim.make_schedule(config, num_steps)
    lrs = np.array([float(schedule(s)) for s in range(num_steps)])
    assert int(np.argmax(lrs)) == warmup
    assert lrs[warmup] == pytest.approx(1e-2, rel=1e-6)
    if warmup:
        assert np.all(np.diff(lrs[:warmup + 1]) > 0)
        assert lrs[0] == 0.0
    assert np.all(np.diff(lrs[warmup:]) < 0)  # strictly decaying to the very end
    assert lrs[-1] == pytest.approx(1e-3, rel=1e-5)
    assert lrs[-1] == lrs[warmup:].min()  # warmup starts at 0, the decay ends here


def test_warmup_fraction_scales_with_the_run():
    config = optim.OptimizerConfig(warmup_fraction=0.1)
    assert config.warmup_for(200) == 20
    assert config.warmup_for(50) == 5


@pytest.mark.parametrize("kwargs, steps", [(dict(warmup_steps=10), 10),
                                           (dict(warmup_steps=9), 10),
                                           (dict(warmup_fraction=0.5), 1)])
def test_steps_not_above_warmup_raise_naming_the_field(kwargs, steps):
    config = optim.OptimizerConfig(**kwargs)
    field = next(iter(kwargs))
    with pytest.raises(ConfigError, match=f"OptimizerConfig.{field}"):
        optim.make_optimizer(config, steps, 32)


def test_mup_scales_hidden_init_and_learning_rate():
    model = tiny_config(d_model=64, n_heads=4, n_kv_heads=2)
    params = nn.unbox(init_params(model, jax.random.PRNGKey(0)))["params"]
    config = optim.OptimizerConfig(mup_base_width=16, warmup_steps=0, clip_norm=0.0,
                                   weight_decay=0.0)
    labels = optim.param_labels(params)
    assert labels["embed"]["embedding"] == "base"
    assert labels["ln_final"]["scale"] == "base"
    assert labels["block_0"]["mlp"]["wo"]["kernel"] == "hidden"
    scaled = optim.scale_init(config, model.d_model, params)
    ratio = scaled["block_0"]["mlp"]["wo"]["kernel"] / params["block_0"]["mlp"]["wo"]["kernel"]
    np.testing.assert_allclose(ratio, 0.5, rtol=1e-6)  # 1 / sqrt(64 / 16)
    np.testing.assert_array_equal(scaled["embed"]["embedding"], params["embed"]["embedding"])
    # Adam's first update has magnitude ~lr per element: hidden ones are lr / m.
    tx, schedule = optim.make_optimizer(config, 10, model.d_model)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    state = tx.init(params)
    _, state = tx.update(grads, state, params)  # step 0 has lr 0 only with warmup
    updates, _ = tx.update(grads, state, params)
    lr = float(schedule(1))
    np.testing.assert_allclose(np.abs(updates["block_0"]["mlp"]["wo"]["kernel"]), lr / 4,
                               rtol=1e-3)
    np.testing.assert_allclose(np.abs(updates["embed"]["embedding"]), lr, rtol=1e-3)
