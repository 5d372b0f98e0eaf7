"""Data stage: the evaluation-task registry: look up tasks of every family by name.

Re-exports the task types of `lmscale.data.evaltask` (EvalTask, Instance, ...), where the
families (`lmscale.data.tasks.*`) register themselves. Lookups here import the families
first (once, on the first lookup: seqio and TF load only then); the families never import
this module, so the registry has no import cycle.

Parametrised names: a registered base name may take suffixes `:n<instances>`, `:s<seed>`,
`:k<shots>` and `:c<context chars>` when its family supports them, e.g.
"gen_uicl_dates:n500:s3:k2" or "py_identifier_copy:n400:c96".
"""
from __future__ import annotations

import functools

from lmscale.data.evaltask import (  # noqa: F401  (re-exported)
    GENERATIVE, KINDS, MULTIPLE_CHOICE, SEQIO_PREFIX, EvalTask, FilterReport, Instance,
    InstanceFilter, format_demonstrations, register_eval_task, register_factory)
from lmscale.data import evaltask


@functools.lru_cache(maxsize=None)
def _load_families() -> None:
    import lmscale.data.tasks  # noqa: F401  (registers every family)


def list_eval_tasks() -> list[str]:
    """Sorted names of every registered evaluation task."""
    _load_families()
    return evaltask.names()


def get_eval_task(name: str) -> EvalTask:
    """The registered task `name`, building parametrised variants on demand.

    Raises:
      KeyError: unknown name; the message lists close names and how many are known.
    """
    _load_families()
    return evaltask.lookup(name)
