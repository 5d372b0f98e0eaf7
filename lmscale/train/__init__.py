"""lmscale.train: run specs, sharded training, checkpoints and metrics.

Stage: train. Submodules: `spec` (RunSpec: steps, N, D, C), `record` (RunRecord: the typed
run.json, and `flops`, the one C = 6 N D), `optim` (AdamW + schedule), `state` (mesh,
sharded TrainState), `step` (loss, jitted steps), `checkpoints` (orbax), `metrics` (JSONL +
TensorBoard, MFU), `loop` (`train`, the entry point), `ladder` (many runs). Importing this
package is light; `record` needs only the standard library.
"""

from __future__ import annotations

import os

from lmscale.train.record import RUN_FILE, RunRecord, RunRecordError, flops  # noqa: F401


def run_info(run_dir: str | os.PathLike) -> dict:
    """Compatibility path: `RunRecord.load(run_dir).to_dict()`, the run.json as a dict
    (same keys as before the typed record). New code should use `RunRecord.load`.

    Raises:
      FileNotFoundError: `run_dir` holds no run.json.
      RunRecordError: run.json is corrupt, of an older format, or lacks a field.
    """
    return RunRecord.load(run_dir).to_dict()
