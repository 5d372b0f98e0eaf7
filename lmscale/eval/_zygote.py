"""Host side of the "unshare" level: a pool of long-lived namespace servers.

Setting up the namespaces and the read-only view of every mount costs more than running
a HumanEval program, so each concurrent sandbox of the process keeps one server
(`lmscale.eval._nsserver`) that did it once, under its own unprivileged uid when the
caller is root, and forks a fresh mount + IPC + pid namespace with fresh tmpfs mounts for
every program. `Job` gives `lmscale.eval.sandbox` the Popen-like view it collects output
from. Servers exit on EOF of their control socket (this process ending, or `shutdown`).
"""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import threading

from lmscale.eval import _nsserver

_SERVER_SOURCE = None
_START_TIMEOUT_S = 30.0
# Forbids nested user namespaces (in one, a program would own new mount namespaces and
# could mount an uncapped tmpfs), remounts every mount read-only (keeping each one's
# locked flags), then execs the server.
_SERVER_INIT = r"""
fail() { echo "%s unshare init: $*" >&2; exit %d; }
echo 0 > /proc/sys/user/max_user_namespaces || fail "user.max_user_namespaces = 0"
for m in $(cut -d" " -f5 /proc/self/mountinfo); do
  mount -o remount,bind,ro "$m" || fail "read-only remount of $m"
done
exec "$@"
""" % (_nsserver.LAUNCH_ERROR_MARK, _nsserver.LAUNCH_ERROR_CODE)


class StartError(RuntimeError):
    """A server could not be started (the message carries its stderr)."""


class Server:
    """One namespace server: runs one program at a time."""

    def __init__(self, launcher: list[str], cfg: dict, python: str):
        global _SERVER_SOURCE
        if _SERVER_SOURCE is None:
            with open(_nsserver.__file__, encoding="utf-8") as f:
                _SERVER_SOURCE = f.read()
        self.uid = cfg["uid"]
        ours, theirs = socket.socketpair()
        unshare = shutil.which("unshare")  # real path: the uid may not traverse a link's dir
        cfg = dict(cfg, argv=[os.path.realpath(unshare) if unshare else "unshare",
                              "--user", "--map-root-user", "--mount", "--net", "--ipc", "--uts",
                              "--", "/bin/sh", "-c", _SERVER_INIT, "sh", python, "-I",
                              "-S", "-c", _SERVER_SOURCE, str(theirs.fileno())])
        try:
            self.proc = subprocess.Popen(
                launcher + [json.dumps(cfg)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/",
                pass_fds=(theirs.fileno(),), start_new_session=True, env=cfg["env"])
        except OSError as e:
            raise StartError(f"cannot start the launcher: {e!r}") from e
        finally:
            theirs.close()
        self.sock = ours
        ready = select.select([ours], [], [], _START_TIMEOUT_S)[0] and ours.recv(1)
        if ready != b"R":
            self.close()
            err = self.proc.stderr.read().decode("utf-8", "replace").strip()
            raise StartError(err[-2000:] or f"no ready byte in {_START_TIMEOUT_S} s "
                             f"(exit code {self.proc.returncode})")
        self.proc.stderr.close()

    def start(self, request: dict) -> "Job":
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            payload = json.dumps(request).encode()
            socket.send_fds(self.sock, [struct.pack("!Q", len(payload))], [out_w, err_w])
            self.sock.sendall(payload)
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return Job(self, open(out_r, "rb", buffering=0), open(err_r, "rb", buffering=0))

    def close(self) -> None:
        """Ends the server (EOF on its socket) and waits for it."""
        self.sock.close()
        try:
            self.proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Job:
    """A running program, with the part of `subprocess.Popen` the sandbox uses."""

    def __init__(self, server: Server, stdout, stderr):
        self.server, self.stdout, self.stderr = server, stdout, stderr
        self.returncode = None
        self.broken = False

    def poll(self):
        if self.returncode is None and not self.broken:
            if select.select([self.server.sock], [], [], 0)[0]:
                self._read_status()
        return self.returncode

    def wait(self, timeout: float | None = None):
        if self.returncode is None and not self.broken:
            if not select.select([self.server.sock], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired("sandbox program", timeout)
            self._read_status()
        return self.returncode

    def _read_status(self):
        raw = b""
        while len(raw) < 4:
            chunk = self.server.sock.recv(4 - len(raw))
            if not chunk:
                self.broken = True
                self.returncode = -9
                return
            raw += chunk
        self.returncode = struct.unpack("!i", raw)[0]

    def kill(self) -> None:
        """Kills the program's pid namespace and waits until it is gone."""
        if self.returncode is None and not self.broken:
            try:
                self.server.sock.sendall(b"K")
                self.wait(timeout=10.0)
            except (OSError, subprocess.TimeoutExpired):
                self.broken = True
                self.returncode = -9


class Pool:
    """Idle servers; `run` checks one out (or starts one) per concurrent program."""

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: list[Server] = []
        self._all: list[Server] = []
        self._pid = os.getpid()

    def checkout(self, make) -> Server:
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not share the parent's
                self._idle, self._all, self._pid = [], [], os.getpid()
            if self._idle:
                return self._idle.pop()
        server = make()
        with self._lock:
            self._all.append(server)
        return server

    def checkin(self, server: Server, healthy: bool, sweep) -> None:
        if healthy and server.proc.poll() is None:
            with self._lock:
                self._idle.append(server)
            return
        self.discard(server, sweep)

    def discard(self, server: Server, sweep) -> None:
        with self._lock:
            if server in self._idle:
                self._idle.remove(server)
            if server in self._all:
                self._all.remove(server)
        server.close()
        if server.uid is not None:
            sweep(server.uid)

    def server_pids(self) -> set[int]:
        with self._lock:
            return {s.proc.pid for s in self._all}

    def uids(self) -> set[int]:
        with self._lock:
            return {s.uid for s in self._all if s.uid is not None}

    def shutdown(self, sweep=None) -> None:
        """Ends every server (idle or not) of this process."""
        with self._lock:
            servers, self._idle, self._all = list(self._all), [], []
        if self._pid != os.getpid():
            return
        for server in servers:
            server.close()
            if sweep and server.uid is not None:
                sweep(server.uid)


POOL = Pool()
atexit.register(POOL.shutdown)
