"""The binaries' console and log file: library detail to a file, one progress line per stage.

`setup(workdir, binary, console)` sends every log record (absl, orbax, jax, TensorFlow's
Python side, lmscale's own INFO lines) to `<workdir>/logs/<binary>.<time>.<pid>.log`; the
console keeps warnings and errors only (`console="quiet"`, the default), or INFO
(`"info"`) or DEBUG (`"debug"`, also in the file) records as well. The stages report
progress with

    progress = logs.stage("train", total=num_steps, unit="steps")
    progress.update(1, note="loss 3.21")   # n units more done
    progress.close()                      # or `with logs.stage(...) as progress:`

which draws one line per stage with an ETA: redrawn in place (tqdm) on a terminal, and as
plain lines elsewhere (a file, a pipe, CI): one every `every_pct` percent or `every_s`
seconds, whichever comes first, and a last one at `close`. Each plain line also goes to
the log file. Before `setup` (a notebook, a test) `stage` prints plain lines to stderr,
so library code can always call it.

Imports only the standard library and absl (tqdm if installed, when a bar is drawn).
"""

from __future__ import annotations

import logging as std_logging
import faulthandler
import contextlib
import io
import os
import shutil
import sys
import time
from typing import Callable, TextIO

from absl import logging

CONSOLE_MODES = ("quiet", "info", "debug")
_CONSOLE_LEVELS = {"quiet": std_logging.WARNING, "info": std_logging.INFO,
                   "debug": std_logging.DEBUG}
PROGRESS_LOGGER = "lmscale.progress"  # progress lines: to the file, never echoed twice

_state = {"mode": None, "stream": None, "path": None, "primary": True, "handler": None,
          "file_handler": None, "muted": 0}
_active: list["Progress"] = []  # open tqdm bars, for writing log lines above them


def _tqdm():
    try:
        import tqdm  # pylint: disable=g-import-not-at-top
        return tqdm
    except ImportError:
        return None


def console_write(text: str, stream: TextIO | None = None) -> None:
    """Writes a line to the console, above any progress bar being drawn."""
    stream = stream or _state["stream"] or sys.stderr
    tqdm = _tqdm() if _active else None
    if tqdm is not None:
        tqdm.tqdm.write(text, file=stream)
    else:
        stream.write(text + "\n")
        stream.flush()


# Python warnings of these categories (overflow in a fit's trial step, a covariance scipy
# could not estimate) are the fitters' business: on a quiet console they go to the log file.
NUMERIC_WARNINGS = ("RuntimeWarning", "OptimizeWarning")


class _ConsoleHandler(std_logging.Handler):
    """Log records at or above the console level, through `console_write`; a warning
    repeated word for word (seqio's, once per run of a ladder) is shown once; numeric
    Python warnings (`NUMERIC_WARNINGS`) are kept off the console when `quiet`."""

    def __init__(self, level: int, stream: TextIO, quiet: bool = False):
        super().__init__(level)
        self.stream = stream
        self.quiet = quiet
        self.setFormatter(std_logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._seen: set[tuple[str, str]] = set()

    def filter(self, record) -> bool:
        if record.name == PROGRESS_LOGGER or not super().filter(record):
            return False
        if self.quiet and record.name == "py.warnings" and any(
                f": {c}: " in record.getMessage() for c in NUMERIC_WARNINGS):
            return False
        if record.levelno == std_logging.WARNING:
            key = (record.name, record.getMessage())
            if key in self._seen:
                return False
            self._seen.add(key)
        return True

    def emit(self, record) -> None:
        try:
            console_write(self.format(record), self.stream)
        except Exception:  # pylint: disable=broad-except
            self.handleError(record)


def log_path(workdir: str, binary: str, now: float | None = None) -> str:
    """`<workdir>/logs/<binary>.<YYYYmmdd-HHMMSS>.<pid>.log` (the folder is not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return os.path.join(workdir, "logs", f"{binary}.{stamp}.{os.getpid()}.log")


def _native_stderr_to(path: str) -> TextIO:
    """Points file descriptor 2 (where C++ libraries, TensorFlow's and XLA's, log) at
    `path`; returns a stream on the former stderr, now Python's `sys.stderr`."""
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = console
    if faulthandler.is_enabled():  # absl's app.run enables it on fd 2: keep it on screen
        faulthandler.enable(file=console)
    return console


def setup(workdir: str, binary: str, console: str = "quiet",
          stream: TextIO | None = None, native_to_file: bool = False) -> str:
    """Routes all logging to a file under `workdir/logs`; returns the file's path.

    Args:
      workdir: the binary's --workdir (created if absent).
      binary: names the file, e.g. "train".
      console: "quiet" (warnings and errors on the console), "info" or "debug" (those
        records too; "debug" also turns absl's verbosity to DEBUG).
      stream: the console (default stderr).
      native_to_file: in "quiet" mode, also send what C++ code writes to file descriptor
        2 (TensorFlow's and XLA's start-up lines, which no environment variable silences
        in this TensorFlow) to the log file; Python's `sys.stderr` (tracebacks included)
        stays on the console. The binaries set it.
    Raises:
      ValueError: an unknown `console` mode.
    """
    if console not in CONSOLE_MODES:
        raise ValueError(f"--console={console!r}: use one of {', '.join(CONSOLE_MODES)}")
    path = log_path(workdir, binary)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if console == "quiet" and native_to_file and stream is None:
        stream = _native_stderr_to(path)
    stream = stream or sys.stderr
    logging.set_verbosity("debug" if console == "debug" else "info")
    root = std_logging.getLogger()
    root.setLevel(std_logging.DEBUG if console == "debug" else std_logging.INFO)
    for old in [logging.get_absl_handler(), _state["handler"], _state["file_handler"]]:
        if old is not None and old in root.handlers:
            root.removeHandler(old)  # absl's writes to stderr; ours replace it
    if _state["file_handler"] is not None:
        _state["file_handler"].close()
    file_handler = std_logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.PythonFormatter())
    root.addHandler(file_handler)
    handler = _ConsoleHandler(_CONSOLE_LEVELS[console], stream, quiet=console == "quiet")
    root.addHandler(handler)
    # Python warnings become records (file; console as filtered). Off, then on: re-patches
    # `warnings.showwarning` where someone replaced it since an earlier `setup`.
    std_logging.captureWarnings(False)
    std_logging.captureWarnings(True)
    _state.update(mode=console, stream=stream, path=path, handler=handler,
                  file_handler=file_handler)
    return path


def set_primary(primary: bool) -> None:
    """Whether this process draws progress (process 0 of a multi-host job does)."""
    _state["primary"] = bool(primary)


@contextlib.contextmanager
def muted():
    """Stages opened inside write their progress lines to the log file only: work nested in
    a stage that draws its own line (the planner's probe runs the trainer and the evaluator
    on every rung) keeps the console at one line per stage. Stages already open still draw."""
    _state["muted"] += 1
    try:
        yield
    finally:
        _state["muted"] -= 1


def _screen(stream: TextIO) -> tuple[int, int]:
    """The terminal's (columns, lines); (80, 24) where it reports none, as a bare
    pseudo-terminal does (tqdm would then draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return size.columns, size.lines
    fallback = shutil.get_terminal_size((80, 24))
    return fallback.columns or 80, fallback.lines or 24


def _to_file(text: str) -> None:
    """A progress line into the log file (after `setup`; never echoed on the console)."""
    if _state["path"] is not None:
        std_logging.getLogger(PROGRESS_LOGGER).info("%s", text)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """One stage's progress line: `update(n, note=)` as work is done, `close()` at the end.

    Args:
      name: the stage ("train", "evaluate", "fit").
      total: units of work in all (None: unknown, no percent or ETA).
      unit: what a unit is ("steps", "units").
      stream: the console (default: `setup`'s, else stderr).
      bar: draw a tqdm bar redrawn in place (default: when the stream is a terminal and
        tqdm is installed); otherwise plain lines.
      every_pct, every_s: plain lines, at most one per `every_pct` percent of the total,
        and at least one per `every_s` seconds of updates.
      clock: seconds (monotonic), for tests.
    """

    def __init__(self, name: str, total: int | None = None, unit: str = "",
                 stream: TextIO | None = None, bar: bool | None = None,
                 every_pct: float = 10.0, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.total, self.unit = name, total, unit
        self.stream = stream or _state["stream"] or sys.stderr
        self.every_pct, self.every_s, self.clock = every_pct, every_s, clock
        self.done, self.note, self.closed = 0, "", False
        self.start = self._last_line_t = clock()
        self._last_line_pct = 0.0
        self.quiet = not _state["primary"] or _state["muted"] > 0
        is_tty = getattr(self.stream, "isatty", lambda: False)()
        tqdm = _tqdm()
        use_bar = (is_tty and tqdm is not None) if bar is None else (bar and tqdm is not None)
        self._bar = None
        if use_bar and not self.quiet:
            columns, lines = _screen(self.stream)
            self._bar = tqdm.tqdm(total=total, desc=name, unit=f" {unit}" if unit else "it",
                                  file=self.stream, ncols=columns, nrows=lines, leave=True)
            _active.append(self)
        else:
            self._line()

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None: no total, or nothing done yet)."""
        if not self.total or self.done <= 0:
            return None
        rate = self.done / max(self.clock() - self.start, 1e-9)
        return max(self.total - self.done, 0) / rate

    def text(self) -> str:
        """The plain progress line, e.g. 'train 40/100 steps (40%) | 12s, ETA 18s | note'."""
        unit = f" {self.unit}" if self.unit else ""
        count = f"{self.done}/{self.total}{unit}" if self.total else f"{self.done}{unit}"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = self.eta_s()
        when = f"{_duration(self.clock() - self.start)}" + \
            (f", ETA {_duration(eta)}" if eta is not None and not self.closed else "")
        return f"{self.name} {count}{pct} | {when}" + (f" | {self.note}" if self.note else "")

    def _line(self) -> None:
        text = self.text()
        _to_file(text)
        if not self.quiet:
            console_write(text, self.stream)
        self._last_line_t = self.clock()
        if self.total:
            self._last_line_pct = 100 * self.done / self.total

    def update(self, n: int = 1, note: str | None = None) -> None:
        """Marks `n` more units done; `note` (e.g. 'loss 3.21') is shown after the count."""
        self.done += n
        if note is not None:
            self.note = note
        if self._bar is not None:
            self._bar.update(n)
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            return
        if self.total and self.done >= self.total:
            return  # the last line is `close`'s
        pct_due = bool(self.total) and \
            100 * self.done / self.total >= self._last_line_pct + self.every_pct
        if pct_due or self.clock() - self._last_line_t >= self.every_s:
            self._line()

    def set_total(self, total: int | None) -> None:
        """The total once known (or changed: a resumed stage, a growing plan)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def close(self, note: str | None = None) -> None:
        """Ends the stage with a last line (total time); idempotent."""
        if self.closed:
            return
        if note is not None:
            self.note = note
        self.closed = True
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.close()
            _active.remove(self)
            _to_file(self.text())
        else:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stage(name: str, total: int | None = None, unit: str = "", **kwargs) -> Progress:
    """A `Progress` for one stage; see `Progress` for the arguments."""
    return Progress(name, total=total, unit=unit, **kwargs)
