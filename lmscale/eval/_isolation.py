"""Command lines, output collection and uid bookkeeping of `lmscale.eval.sandbox`.

Standard library only.
"""
from __future__ import annotations

import functools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import Mapping

# How a launcher, init or server failure is told from a program's own (set in the
# unshare level's server, which runs alone under `python -S`).
from lmscale.eval._nsserver import LAUNCH_ERROR_CODE, LAUNCH_ERROR_MARK
# Stop reasons of `collect_output` (statuses of `lmscale.eval.sandbox`).
STATUS_TIMEOUT = "timeout"
STATUS_OUTPUT_LIMIT = "output_limit"
# Grace period for the last output after the program's process has exited.
_DRAIN_S = 0.2
# How often the reader checks whether the program's process has exited.
_POLL_S = 0.05


def bwrap_argv(scratch: str, tmp_mb: int, env: Mapping[str, str]) -> list[str]:
    bwrap = shutil.which("bwrap")  # real path: the uid may not traverse a link's dir
    argv = [os.path.realpath(bwrap) if bwrap else "bwrap",
            "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Size-capped private tmpfs over every world-writable place, then the scratch dir
    # (usually under /tmp) bound back writable on top.
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        argv += ["--size", str(tmp_mb << 20), "--tmpfs", path]
    argv += ["--bind", scratch, scratch, "--chdir", scratch, "--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return argv + ["--"]


def _others_can_run(path: str) -> bool:
    """True when a uid with no special rights can traverse to `path` and execute it."""
    path = os.path.realpath(path)
    try:
        if os.stat(path).st_mode & 0o005 != 0o005:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def default_python() -> str:
    """The interpreter the sandbox runs programs with.

    The base interpreter of `sys.executable` (out of any virtualenv: programs need only
    the standard library) when the unprivileged sandbox uid can run it, else the first
    python3 on the system PATH that it can run.
    """
    base = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    if os.geteuid() != 0 or _others_can_run(base):
        return base
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        candidate = os.path.join(directory, "python3")
        if os.path.exists(candidate) and _others_can_run(candidate):
            return os.path.realpath(candidate)
    raise RuntimeError(
        f"sandbox: the interpreter {base} is not executable by an unprivileged uid and "
        "no python3 in /usr/local/bin, /usr/bin or /bin is; pass python_executable=")


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) pids, in the host pid namespace, whose real uid is `uid`.

    Zombies are left out: they hold no resources and cannot be killed; those of a pid
    namespace's init are reparented to the host's init, which may reap them late.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f if b":" in line)
            if int(fields[b"Uid"].split()[0]) == uid and fields[b"State"].split()[0] not in (
                    b"Z", b"X"):
                pids.append(int(entry))
        except (OSError, ValueError, KeyError, IndexError):
            continue  # the process ended while we read it
    return pids


def count_tasks_of_uid(uid: int) -> int:
    """Threads + processes of `uid`: what RLIMIT_NPROC counts against a non-root user."""
    total = 0
    for pid in pids_of_uid(uid):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def sweep_uid(uid: int, budget_s: float = 5.0) -> None:
    """SIGKILLs every process of `uid` until none is left (the process cap bounds it)."""
    end = time.monotonic() + budget_s
    while True:
        pids = pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > end:
            raise RuntimeError(f"sandbox: processes of uid {uid} survive SIGKILL: {pids}")
        time.sleep(0.005)


def collect_output(proc, deadline: float, max_output_bytes: int):
    """Reads both pipes until EOF, exit + drain, the deadline or the output bound.

    Returns:
      (stdout bytes, stderr bytes, stop reason: None, STATUS_TIMEOUT or
      STATUS_OUTPUT_LIMIT).
    """
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    sel = selectors.DefaultSelector()
    for name in bufs:
        stream = getattr(proc, name)
        os.set_blocking(stream.fileno(), False)
        sel.register(stream, selectors.EVENT_READ, name)
    reason = None
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = STATUS_TIMEOUT
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > _DRAIN_S:
                break  # a leftover descendant holds the pipe open; it is killed next
            for key, _ in sel.select(min(deadline - now, _POLL_S)):
                try:
                    chunk = os.read(key.fileobj.fileno(), 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                buf += chunk[:max_output_bytes + 1 - len(buf)]
                if len(buf) > max_output_bytes:
                    reason = STATUS_OUTPUT_LIMIT
            if reason is not None:
                break
    finally:
        sel.close()
    if reason is None:
        # Both pipes at EOF (or drained): the launcher may still be collecting its
        # child's status (bwrap, unshare), so wait rather than kill it.
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            reason = STATUS_TIMEOUT
    return bytes(bufs["stdout"]), bytes(bufs["stderr"]), reason
