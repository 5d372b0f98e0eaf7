"""Loss, train step and eval step, jitted with explicit shardings.

Stage: train. Consumes a `TrainState` and a batch dict of int32 [B, T] arrays (the
`lmscale.data.pipeline.FEATURES`); produces the next state and scalar metrics. Steps are
`jax.jit` with explicit in/out shardings and the state donated; the model's activation
constraints resolve through the logical-axis rules active while tracing.

Loss: token-weighted cross-entropy over `decoder_loss_weights`, in nats per token, plus the
model's optional z-loss `ModelConfig.z_loss_weight * log(Z)^2` (PaLM), reported separately
and not included in `loss`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmscale.models.config import ModelConfig
from lmscale.models.decoder import Decoder
from lmscale.train.state import TrainState

Batch = dict[str, jax.Array]


def token_losses(config: ModelConfig, params, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Per-token NLL and log-partition.

    Returns:
      (nll, log_z): both [B, T] float32, nats; positions with weight 0 hold garbage-free
      but meaningless values and must be masked by the caller.
    """
    logits_btv = Decoder(config).apply(
        {"params": params}, batch["decoder_input_tokens"], batch["decoder_positions"],
        batch["decoder_segment_ids"])
    log_z = jax.nn.logsumexp(logits_btv, axis=-1)
    target_logit = jnp.take_along_axis(
        logits_btv, batch["decoder_target_tokens"][..., None], axis=-1)[..., 0]
    return log_z - target_logit, log_z


def loss_sums(config: ModelConfig, params, batch: Batch,
              with_z_loss: bool = True) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """(objective sum, (nll sum, z-loss sum, weight sum)) over loss-weighted tokens.

    objective = nll + config.z_loss_weight * log(Z)^2 per token (`decoder.z_loss`).
    """
    nll, log_z = token_losses(config, params, batch)
    weights = batch["decoder_loss_weights"].astype(jnp.float32)
    nll_sum = jnp.sum(nll * weights)
    z_sum = jnp.zeros((), jnp.float32)
    if with_z_loss and config.z_loss_weight:
        z_sum = config.z_loss_weight * jnp.sum(jnp.square(log_z) * weights)
    return nll_sum + z_sum, (nll_sum, z_sum, jnp.sum(weights))


def _global_sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))


def train_step(state: TrainState, batch: Batch, *, config: ModelConfig,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               noise_scale: bool) -> tuple[TrainState, dict[str, jax.Array]]:
    """One AdamW step on a token-weighted mean loss.

    With `noise_scale`, the batch is split into two halves whose gradients are computed
    separately (same FLOPs as one pass) and combined token-weighted into the exact full
    gradient; their squared norms give McCandlish et al.'s (2018, App. A) unbiased
    estimates of |G|^2 and tr(Sigma), which the loop smooths into B_noise = tr(Sigma)/|G|^2.

    Returns:
      (new state, metrics): scalars `loss` (nats/token, without z-loss), `z_loss`,
      `grad_norm` (before clipping), `lr`, `tokens` (loss-weighted tokens in the batch),
      and with `noise_scale` `grad_sq_small`, `grad_sq_big`, `tokens_small`.
    """
    grad_fn = jax.grad(lambda p, b: loss_sums(config, p, b), has_aux=True)
    metrics = {}
    if noise_scale:
        halves = jax.tree_util.tree_map(
            lambda x: x.reshape((2, x.shape[0] // 2) + x.shape[1:]), batch)
        grads2, (nll2, z2, w2) = jax.vmap(grad_fn, in_axes=(None, 0))(state.params, halves)
        weight = jnp.sum(w2)
        nll_sum, z_sum = jnp.sum(nll2), jnp.sum(z2)
        grads = jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0) / weight, grads2)
        per_half = jax.vmap(lambda g, w: _global_sq_norm(
            jax.tree_util.tree_map(lambda x: x / jnp.maximum(w, 1.0), g)))(grads2, w2)
        metrics.update(grad_sq_small=jnp.mean(per_half), tokens_small=weight / 2)
    else:
        grads, (nll_sum, z_sum, weight) = grad_fn(state.params, batch)
        grads = jax.tree_util.tree_map(lambda g: g / weight, grads)
    grad_sq = _global_sq_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    denom = jnp.maximum(weight, 1.0)
    metrics.update(loss=nll_sum / denom, z_loss=z_sum / denom, grad_norm=jnp.sqrt(grad_sq),
                   lr=schedule(state.step), tokens=weight)
    if noise_scale:
        metrics["grad_sq_big"] = grad_sq
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def eval_step(params, batch: Batch, *, config: ModelConfig) -> dict[str, jax.Array]:
    """Sums for a token-weighted validation loss: {'nll_sum', 'weight_sum'} (nats, tokens)."""
    _, (nll_sum, _, weight) = loss_sums(config, params, batch, with_z_loss=False)
    return {"nll_sum": nll_sum, "weight_sum": weight}


def _mesh_context(mesh: jax.sharding.Mesh, enabled: bool):
    return jax.set_mesh(mesh) if enabled else contextlib.nullcontext()


def make_train_step(config: ModelConfig, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, mesh: jax.sharding.Mesh, rules,
                    state_shardings: TrainState, batch_sharding, *, noise_scale: bool = False,
                    constrain_activations: bool = False,
                    compiler_options: dict[str, Any] | None = None
                    ) -> Callable[[TrainState, Batch], Any]:
    """A jitted `train_step` with explicit shardings; the input state is donated.

    `compiler_options`: XLA debug options for this executable only (`jax.jit`'s
    `compiler_options`, e.g. {"xla_cpu_use_onednn": True}); `tools/bench_train.py
    --variant` A/Bs them in one process.

    With `constrain_activations` the mesh is set while tracing, so the model's logical
    activation constraints apply; without it XLA propagates the in/out shardings. (The
    loop turns it on by default: `LoopConfig.constrain_activations`; on a 2x2x2 mesh the
    constrained losses equal one device's, tests/train/test_step.py.)
    """
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def step(state, batch):
        with nn.logical_axis_rules(rules):
            return train_step(state, batch, config=config, tx=tx, schedule=schedule,
                              noise_scale=noise_scale)

    jitted = jax.jit(step, in_shardings=(state_shardings, batch_sharding),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,),
                     compiler_options=compiler_options)

    def run(state, batch):
        with _mesh_context(mesh, constrain_activations):
            return jitted(state, batch)
    return run


def make_eval_step(config: ModelConfig, mesh: jax.sharding.Mesh, rules, param_shardings,
                   batch_sharding, *, constrain_activations: bool = False
                   ) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """A jitted `eval_step` (parameters not donated)."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def step(params, batch):
        with nn.logical_axis_rules(rules):
            return eval_step(params, batch, config=config)

    jitted = jax.jit(step, in_shardings=(param_shardings, batch_sharding),
                     out_shardings=replicated)

    def run(params, batch):
        with _mesh_context(mesh, constrain_activations):
            return jitted(params, batch)
    return run


def one_device_train_step(spec, optimizer, device=None, compiler_options=None):
    """(state, jitted train step, batch sharding) of `spec` on one device, as the trainer
    builds them (benchmarks, the GPU check and the planner's probe time this);
    `compiler_options` as in `make_train_step`."""
    from lmscale.train import optim  # pylint: disable=g-import-not-at-top
    from lmscale.train import state as state_lib  # pylint: disable=g-import-not-at-top
    tx, schedule = optim.make_optimizer(optimizer, spec.num_steps, spec.model.d_model)
    mesh_config = state_lib.MeshConfig(data=1, fsdp=1, tensor=1)
    mesh = state_lib.make_mesh(mesh_config, [device or jax.devices()[0]])
    rules = mesh_config.logical_rules()
    _, shardings = state_lib.state_shardings(spec, tx, mesh, rules)
    state = state_lib.create_train_state(spec, tx, optimizer, mesh, shardings)
    batch_sharding = nn.logical_to_mesh_sharding(jax.sharding.PartitionSpec("batch", "length"),
                                                 mesh, rules)
    train_step = make_train_step(spec.model, tx, schedule, mesh, rules, shardings,
                                 batch_sharding, compiler_options=compiler_options)
    return state, train_step, batch_sharding
