"""Execution server of the "unshare" level, run inside its namespaces (stdlib only).

The host (`lmscale.eval._zygote`) starts it once per worker as
``unshare --user --map-root-user --mount --net --ipc --uts -- sh -c INIT python -I -S -c
<this file> FD``: INIT has remounted every mount read-only, so the costly set-up is paid
once. For each program received on the control socket FD (a length-prefixed JSON
request, with the program's stdout and stderr write ends as SCM_RIGHTS) it forks:

* C: new mount + IPC namespaces, fresh size-capped tmpfs on /tmp, /var/tmp, /dev/shm
  (the scratch dir lives in /tmp), then a new pid namespace whose init is
* I (pid 1): a fresh /proc, forks P and reaps until P is gone, exits with P's status
  (a signal as 128 + sig); its exit kills every process left in the pid namespace;
* P: rlimits, a new session, every capability dropped and no new privileges, then execs
  ``python -I -B prog.py``.

C writes I's pid to the server, which SIGKILLs it on the host's "K" (timeout, output
bound) and replies with C's exit code once C, and so I's whole namespace, is gone.
On control-socket EOF (the host went away) the server kills the program and exits.
"""
import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys

LAUNCH_ERROR_CODE = 118
LAUNCH_ERROR_MARK = "lmscale-sandbox-launch-error:"
SCRATCH = "/tmp/lmscale-sandbox-work"

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWPID = 0x00020000, 0x08000000, 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS = 1, 24, 28
_PR_SET_NO_NEW_PRIVS, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
# SECBIT_NOROOT | NO_SETUID_FIXUP | KEEP_CAPS_LOCKED | NO_CAP_AMBIENT_RAISE, all locked:
# exec as (namespace) root grants no capability, and nothing can undo that.
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
_libc.unshare.argtypes = [ctypes.c_int]


def _ok(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data=None):
    _ok(_libc.mount(src.encode(), target.encode(), fstype and fstype.encode(), flags,
                    data and data.encode()), f"mount {fstype or src} on {target}")


def _prctl(option, arg=0):
    _ok(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _fail(what):
    os.write(2, f"{LAUNCH_ERROR_MARK} unshare server: {what}\n".encode())
    os._exit(LAUNCH_ERROR_CODE)


def _drop_privileges():
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    cap = 0
    while _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS)


def _program(req, alive_r):
    """P: limits, no privileges, exec the interpreter on the program."""
    import resource
    os.close(alive_r)
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(3, 1 << 16)
    for name, value in req["rlimits"]:
        resource.setrlimit(getattr(resource, name), (value, value))
    _drop_privileges()
    os.chdir(SCRATCH)
    os.execve(req["python"], [req["python"], "-I", "-B", "prog.py"], req["env"])


def _init(req, alive_r):
    """I, pid 1 of the program's pid namespace."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(LAUNCH_ERROR_CODE)  # C is already gone: so is the evaluation
    _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            _program(req, alive_r)
        except BaseException as e:
            _fail(f"exec {req['python']}: {e!r}")
    while True:
        done, status = os.wait()
        if done == pid:
            code = os.waitstatus_to_exitcode(status)
            os._exit(code if code >= 0 else 128 - code)


def _child(req, fds, pid_w):
    """C: private mounts and tmpfs, then the pid namespace."""
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        _ok(_libc.unshare(_CLONE_NEWNS | _CLONE_NEWIPC), "unshare(mount, ipc)")
        _mount("none", "/", None, _MS_REC | _MS_PRIVATE)
        for path in ("/tmp", "/var/tmp", "/dev/shm"):
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV,
                   f"size={int(req['tmp_mb'])}m,mode=1777")
        os.mkdir(SCRATCH, 0o700)
        with open(os.path.join(SCRATCH, "prog.py"), "w", encoding="utf-8") as f:
            f.write(req["program"])
        _ok(_libc.unshare(_CLONE_NEWPID), "unshare(pid)")
        alive_r, alive_w = os.pipe()
        pid = os.fork()
    except BaseException as e:
        _fail(repr(e))
    if pid == 0:
        try:
            os.close(alive_w)
            os.close(pid_w)
            _init(req, alive_r)
        except BaseException as e:
            _fail(f"init: {e!r}")
    os.write(pid_w, struct.pack("!i", pid))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve_one(sock, req, fds):
    """Runs one program; returns C's exit code, or None when the host went away."""
    pid_r, pid_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sock.close()
            os.close(pid_r)
            _child(req, fds, pid_w)
        finally:
            os._exit(LAUNCH_ERROR_CODE)
    os.close(pid_w)
    for fd in fds:
        os.close(fd)
    raw = os.read(pid_r, 4)
    os.close(pid_r)
    target = struct.unpack("!i", raw)[0] if len(raw) == 4 else pid
    pidfd = os.pidfd_open(pid)
    gone = False
    try:
        while True:
            ready = select.select([sock, pidfd], [], [])[0]
            if pidfd in ready:
                return None if gone else os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if sock in ready and not gone:
                msg = sock.recv(1)
                gone = not msg
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    finally:
        os.close(pidfd)


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.sendall(b"R")
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, 8, 2)
            if not head:
                return
            head += _recv_exact(sock, 8 - len(head))
            req = json.loads(_recv_exact(sock, struct.unpack("!Q", head)[0]))
        except (EOFError, ConnectionError):
            return
        code = _serve_one(sock, req, fds)
        if code is None:
            return
        sock.sendall(struct.pack("!i", code))


if __name__ == "__main__":
    main()
