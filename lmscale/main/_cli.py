"""Shared prologue of the binaries: the common flags, multi-host start-up, gin parsing.

Private to `lmscale.main`: every binary imports this module and the library, never another
binary.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable

from absl import app, flags, logging

from lmscale import runtime

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("gin_file", [], "Gin files, parsed in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files.")
flags.DEFINE_string("workdir", None, "Parent directory of the run directories.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() with the cluster's environment.")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def initialize_distributed() -> None:
    """Starts multi-host JAX if asked; must run before any other JAX call."""
    import jax  # pylint: disable=g-import-not-at-top
    if FLAGS.coordinator_address or FLAGS.distributed:
        if os.environ.get("JAX_PLATFORMS", "") == "cpu" or FLAGS.coordinator_address:
            # CPU devices of different processes need a collectives backend.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                                   FLAGS.process_id)
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def parse_gin(gin_files, gin_bindings) -> str:
    """Parses gin files (searched from the cwd and the repository root) and bindings.

    Returns:
      The resolved configuration text (saved as each run's config.gin).
    Raises:
      ValueError: unknown configurable or parameter, naming the binding.
    """
    import gin  # pylint: disable=g-import-not-at-top
    gin.add_config_file_search_path(str(REPO_ROOT))
    gin.parse_config_files_and_bindings(gin_files, gin_bindings, finalize_config=False)
    return gin.config_str()


def configured(fn: Callable) -> Callable:
    """`fn` with its gin bindings (dynamically registered by the gin files' imports)."""
    import gin  # pylint: disable=g-import-not-at-top
    try:
        return gin.get_configurable(fn)
    except ValueError as e:
        raise ValueError(f"{fn.__module__}.{fn.__qualname__} is not configured: the gin files "
                         f"must `import {fn.__module__}` (see experiments/runs/train.gin)"
                         ) from e


def start(argv) -> str:
    """The common prologue of the training binaries: flags checked, multi-host started,
    gin parsed; returns the resolved configuration text."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    tuned = runtime.tune_host_allocator()  # before JAX starts its CPU threads
    logging.info("host allocator tuned for XLA:CPU: %s", tuned)
    initialize_distributed()
    return parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)

