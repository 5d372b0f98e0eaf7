"""The evaluator's validation loss is training's eval step (one function, lmscale.train.step)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.eval import scorer as S
from lmscale.models import init_params
from lmscale.testing import tiny_config
from lmscale.train import step as step_lib

pytestmark = pytest.mark.usefixtures("fast_compiles")


def _batch(rng, b=2, t=16):
    tgt = rng.integers(3, 259, (b, t)).astype(np.int32)
    return {"decoder_target_tokens": tgt,
            "decoder_input_tokens": np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], 1),
            "decoder_loss_weights": (rng.random((b, t)) < 0.8).astype(np.int32),
            "decoder_positions": np.broadcast_to(np.arange(t), (b, t)).astype(np.int32),
            "decoder_segment_ids": np.ones((b, t), np.int32)}


def test_validation_loss_is_trainings_eval_step(monkeypatch):
    config = tiny_config(vocab_size=259, max_seq_len=32)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
    rng = np.random.default_rng(0)
    batches = [_batch(rng) for _ in range(3)]
    calls = []
    real = step_lib.eval_step

    def counting(params, batch, *, config):
        calls.append(1)  # counted at trace time: the scorer traced training's eval step
        return real(params, batch, config=config)

    monkeypatch.setattr(step_lib, "eval_step", counting)
    S._eval_step_fn.cache_clear()  # trace afresh, through the patched function
    got = S.validation_loss(config, params, iter(batches))
    assert calls, "validation_loss did not go through lmscale.train.step.eval_step"
    sums = [real(params, b, config=config) for b in batches]
    nll = sum(float(s["nll_sum"]) for s in sums)
    weight = sum(float(s["weight_sum"]) for s in sums)
    assert got.num_tokens == int(weight) and got.num_batches == 3
    assert got.loss_nats == pytest.approx(nll / weight, rel=1e-6)
