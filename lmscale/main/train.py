r"""Binary: train one run from gin files.

  python -m lmscale.main.train --gin_file=experiments/runs/train.gin \
      --gin_file=experiments/models/tiny.gin \
      --gin_bindings="MODEL = @tiny_s/model_config.ModelConfig()" \
      --gin.TOKEN_MULTIPLIER=2 --gin.BATCH_SIZE=8 --gin.SEQ_LEN=64 --workdir=/tmp/runs

Flags -> multi-host start-up -> gin -> `lmscale.train.loop.train` (bound by the gin files
through dynamic registration). Multi-host: `--coordinator_address/--num_processes/
--process_id`, or `--distributed` to let `jax.distributed.initialize` read the cluster
environment (TPU pods, SLURM); CPU processes talk over gloo collectives.
"""

from __future__ import annotations

from absl import app

from lmscale.main import _cli

FLAGS = _cli.FLAGS


def main(argv) -> None:
    config_text = _cli.start(argv)
    from lmscale.train import loop  # pylint: disable=g-import-not-at-top
    from lmscale.train.spec import RunSpec  # pylint: disable=g-import-not-at-top
    spec = _cli.configured(RunSpec)()
    _cli.configured(loop.train)(spec=spec, workdir=FLAGS.workdir, config_text=config_text)


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
