"""lmscale.train: run specs, sharded training, checkpoints and metrics.

Stage: train. Submodules: `spec` (RunSpec: steps, N, D, C), `optim` (AdamW + schedule),
`state` (mesh, sharded TrainState), `step` (loss, jitted steps), `checkpoints` (orbax),
`metrics` (JSONL + TensorBoard, MFU), `loop` (`train`, the entry point). Importing this
package is light; `run_info` needs only the standard library.
"""

from __future__ import annotations

import json
import pathlib

RUN_FILE = "run.json"


def run_info(run_dir: str | pathlib.Path) -> dict:
    """The run's `run.json` (see `lmscale.train.loop`) as a dict.

    Raises:
      FileNotFoundError: `run_dir` holds no run.json.
    """
    path = pathlib.Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run.json (not a training run directory)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
