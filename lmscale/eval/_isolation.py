"""Command lines of the namespace isolation levels of `lmscale.eval.sandbox`.

Standard library only (the sandbox's launcher runs under ``python -S``).
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
from typing import Mapping

# Shared with the sandbox: how a launcher or init failure is told from a program's own.
LAUNCH_ERROR_CODE = 118
LAUNCH_ERROR_MARK = "lmscale-sandbox-launch-error:"


def bwrap_argv(scratch: str, tmp_mb: int, env: Mapping[str, str]) -> list[str]:
    argv = [shutil.which("bwrap") or "bwrap",
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


# Init of the "unshare" level, run as the namespace's root (mapped to the sandbox uid):
# binds the scratch dir onto itself (a fresh writable mount), remounts every other
# mount read-only, puts fresh size-capped tmpfs mounts on the world-writable places and
# execs the program with every capability dropped (so it can undo none of this). /bin/sh
# stays pid 1, so the program is not pid 1 (which ignores default-action signals) and a
# signal death reads 128+sig; when it exits the kernel kills the whole pid namespace.
_UNSHARE_INIT = r"""
s="$1"; mb="$2"; shift 2
fail() { echo "%s unshare init: $*" >&2; exit %d; }
mount --bind "$s" "$s" && cd "$s" || fail "bind $s"
for m in $(cut -d" " -f5 /proc/self/mountinfo); do
  [ "$m" = "$s" ] || mount -o remount,bind,ro "$m" || fail "read-only remount of $m"
done
for d in /tmp /var/tmp /dev/shm; do
  mount -t tmpfs -o "size=${mb}m,mode=1777,nosuid,nodev" tmpfs "$d" || fail "tmpfs on $d"
done
# The scratch dir may lie under a path just covered: bind the old one (the cwd) back.
mkdir -p "$s" && mount --no-canonicalize --bind . "$s" && cd "$s" || fail "rebind $s"
command -v setpriv >/dev/null || fail "setpriv (util-linux) not found"
[ -x "$1" ] || fail "cannot execute $1"
setpriv --bounding-set -all --inh-caps -all --no-new-privs -- "$@"
exit $?
""" % (LAUNCH_ERROR_MARK, LAUNCH_ERROR_CODE)


def unshare_argv(scratch: str, tmp_mb: int) -> list[str]:
    return [shutil.which("unshare") or "unshare", "--user", "--map-root-user",
            "--pid", "--fork", "--kill-child", "--mount", "--mount-proc",
            "--net", "--ipc", "--uts", "--", "/bin/sh", "-c", _UNSHARE_INIT, "sh",
            scratch, str(tmp_mb)]


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
