"""Training metrics: one writer to JSONL and TensorBoard, throughput, MFU, progress, noise.

Stage: train. The loop hands scalar dicts to `make_writer`'s writer (clu's MultiWriter over a
JSONL writer and a TensorBoard summary writer; process 0 only). `Throughput` turns wall
time into tokens/s, FLOP/s, MFU and ETA; `NoiseScale` smooths the per-step gradient-norm
estimates into McCandlish et al.'s simple noise scale B_noise (tokens).

JSONL rows: {"step": int, "wall_s": float, <metric>: float, ...}, one per write.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from clu import metric_writers
from clu.metric_writers import interface

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

# Metric names written by the trainer (the evaluator reads them by these names).
TRAIN_LOSS = "train/loss"
TRAIN_Z_LOSS = "train/z_loss"
LEARNING_RATE = "train/lr"
GRAD_NORM = "train/grad_norm"
TOKENS_SEEN = "tokens_seen"
FLOPS_SEEN = "flops_seen"
TOKENS_PER_S = "perf/tokens_per_s"
MFU = "perf/mfu"
NOISE_SCALE = "train/noise_scale_tokens"
VALID_LOSS_PREFIX = "valid/"  # + split name + "/loss"


def valid_loss_name(name: str) -> str:
    return f"{VALID_LOSS_PREFIX}{name}/loss"


class JsonlWriter(interface.MetricWriter):
    """Appends one JSON object per `write_scalars` call to a file (scalars only)."""

    def __init__(self, path: str | pathlib.Path):
        self._path = pathlib.Path(path)
        self._file = open(self._path, "a", encoding="utf-8")
        self._start = time.time()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        row = {"step": int(step), "time": time.time()}
        row.update({k: _to_float(v) for k, v in scalars.items()})
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, {k: v for k, v in values.items() if np.ndim(v) == 0})

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


def _to_float(value) -> float | int:
    value = np.asarray(value).item()
    return value if isinstance(value, int) else float(value)


def make_writer(run_dir: str | pathlib.Path, is_writer: bool) -> interface.MetricWriter:
    """JSONL + TensorBoard writer in `run_dir` on the writing process, a no-op elsewhere."""
    if not is_writer:
        return metric_writers.MultiWriter([])
    run_dir = pathlib.Path(run_dir)
    return metric_writers.MultiWriter([
        JsonlWriter(run_dir / METRICS_FILE),
        metric_writers.SummaryWriter(str(run_dir / TENSORBOARD_DIR)),
    ])


def read_metrics(run_dir: str | pathlib.Path) -> list[dict]:
    """All rows of `<run_dir>/metrics.jsonl` (tolerates a truncated last line of a killed run)."""
    rows = []
    path = pathlib.Path(run_dir) / METRICS_FILE
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def measure_peak_flops(size: int = 2048, repeats: int = 5,
                       device: jax.Device | None = None) -> float:
    """Measured float32 matmul FLOP/s of one device (best of `repeats` [size, size] dots).

    On CPU a single device's dot uses the whole host's cores, so this is the host's peak.
    """
    device = device or jax.local_devices()[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    b = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        dot(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best


def peak_flops_total(peak_per_device: float | None) -> float:
    """Peak FLOP/s of the whole job: per-device peak x devices (measured if None).

    CPU devices forced by XLA flags share one host's cores, so on CPU the host's measured
    peak is the total regardless of the device count.
    """
    if jax.default_backend() == "cpu":
        return peak_per_device or measure_peak_flops()
    return (peak_per_device or measure_peak_flops()) * jax.device_count()


class Throughput:
    """Tokens/s, FLOP/s, MFU and ETA over the interval since the last `report`."""

    def __init__(self, flops_per_step: float, tokens_per_step: int, peak_flops: float,
                 num_steps: int, start_step: int):
        self.flops_per_step, self.tokens_per_step = flops_per_step, tokens_per_step
        self.peak_flops, self.num_steps = peak_flops, num_steps
        self._step, self._time = start_step, time.perf_counter()

    def reset(self, step: int) -> None:
        """Restarts the interval (after compilation, evaluation or checkpointing)."""
        self._step, self._time = step, time.perf_counter()

    def report(self, step: int) -> dict[str, float]:
        now = time.perf_counter()
        steps, wall = step - self._step, max(now - self._time, 1e-9)
        self._step, self._time = step, now
        step_s = wall / max(steps, 1)
        flops_per_s = steps * self.flops_per_step / wall
        return {TOKENS_PER_S: steps * self.tokens_per_step / wall,
                MFU: flops_per_s / self.peak_flops if self.peak_flops else 0.0,
                "perf/step_s": step_s, "eta_s": step_s * (self.num_steps - step)}


class NoiseScale:
    """Exponential moving averages of |G|^2 and tr(Sigma), and their ratio B_noise.

    McCandlish et al. (2018) App. A: from gradient squared norms at two batch sizes
    b_small < b_big (tokens), |G|^2 ~ (b_big g_big - b_small g_small) / (b_big - b_small)
    and tr(Sigma) ~ (g_small - g_big) / (1/b_small - 1/b_big); both are unbiased but noisy,
    so each is averaged before taking the ratio.
    """

    def __init__(self, decay: float = 0.95):
        self.decay, self._g2, self._trace = decay, None, None

    def update(self, grad_sq_small: float, grad_sq_big: float, tokens_small: float,
               tokens_big: float) -> float:
        """Adds one step's estimates; returns the smoothed B_noise in tokens (nan early)."""
        if tokens_big <= tokens_small or tokens_small <= 0:
            return float("nan")
        g2 = (tokens_big * grad_sq_big - tokens_small * grad_sq_small) / (tokens_big - tokens_small)
        trace = (grad_sq_small - grad_sq_big) / (1.0 / tokens_small - 1.0 / tokens_big)
        d = self.decay
        self._g2 = g2 if self._g2 is None else d * self._g2 + (1 - d) * g2
        self._trace = trace if self._trace is None else d * self._trace + (1 - d) * trace
        return self._trace / self._g2 if self._g2 > 0 else float("nan")


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"
