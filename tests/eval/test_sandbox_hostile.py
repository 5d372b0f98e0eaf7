"""More hostile programs (issue 16, item 6) at every namespace level that works here.

Complements tests/eval/test_sandbox.py (files dropped everywhere, disk and /dev/shm
filled, host processes signalled, network, fork bombs, setsid / double-fork escapes):
files readable only by their owner, SysV IPC and abstract sockets left behind, nested
user namespaces, the unshare level's pooled server attacked from its programs, and one
program's leftovers seen by the next one of the same server.
"""
import os
import pathlib
import shutil
import socket
import tempfile

import pytest

from lmscale.eval import sandbox
from tests.eval.test_sandbox import _assert_uid_clean, _available, no_leftovers  # noqa: F401

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(params=("unshare", "bwrap"))
def ns_level(request):
    if not _available(request.param):
        pytest.skip(f"isolation {request.param!r} does not work on this machine")
    return request.param


def _run(program, level, **kw):
    kw.setdefault("timeout_s", 10.0)
    return sandbox.execute(program, isolation=level, min_isolation=level, **kw)


def test_owner_only_files_are_unreadable(ns_level, no_leftovers):
    if not sandbox._is_root():
        pytest.skip("not root: programs run under the caller's uid and read its files")
    # Outside /tmp (which every level hides), in a directory anyone may traverse.
    where = tempfile.mkdtemp(prefix=".lmscale-test-secret-", dir=ROOT)
    try:
        os.chmod(where, 0o755)
        secret = os.path.join(where, "secret.txt")
        with open(secret, "w") as f:
            f.write("secret-42")
        os.chmod(secret, 0o600)
        program = ("try:\n"
                   f"    print(open({secret!r}).read())\n"
                   "except OSError as e:\n"
                   "    print('denied', type(e).__name__)\n"
                   "try:\n"
                   "    print(open('/etc/shadow').read()[:20])\n"
                   "except OSError as e:\n"
                   "    print('denied', type(e).__name__)\n")
        r = _run(program, ns_level)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert r.passed, r.stderr
    assert r.stdout == "denied PermissionError\n" * 2 or "secret-42" not in r.stdout
    assert "secret-42" not in r.stdout and "root:" not in r.stdout


_SHM = ("import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "shmid = libc.shmget(0x4c4d5343, 1 << 20, 0o1666)  # IPC_CREAT | 0666\n"
        "print('shm', shmid)\n")


def test_sysv_shared_memory_does_not_outlive_the_program(ns_level, no_leftovers):
    def host_keys():
        with open("/proc/sysvipc/shm") as f:
            return {line.split()[0] for line in list(f)[1:]}

    before = host_keys()
    first = _run(_SHM, ns_level)
    assert first.passed and first.stdout.startswith("shm ") and "shm -1" not in first.stdout
    second = _run("print(open('/proc/sysvipc/shm').read().splitlines()[1:])", ns_level)
    assert second.passed and second.stdout == "[]\n", second.stdout
    assert host_keys() - before == set()
    assert str(0x4c4d5343) not in host_keys()


def test_abstract_unix_socket_of_the_host_is_unreachable(ns_level, no_leftovers):
    name = "\0lmscale-test-" + os.urandom(4).hex()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(name)
    listener.listen(1)
    program = ("import socket\n"
               "s = socket.socket(socket.AF_UNIX)\n"
               "try:\n"
               f"    s.connect({name!r})\n"
               "    print('connected')\n"
               "except OSError as e:\n"
               "    print('blocked', type(e).__name__)\n")
    try:
        r = _run(program, ns_level)
    finally:
        listener.close()
    assert r.passed and r.stdout.startswith("blocked"), r.stdout + r.stderr


def test_no_nested_user_namespace(ns_level, no_leftovers):
    # In a user namespace of its own a program would hold every capability over new
    # mount namespaces and could mount a tmpfs without our size cap.
    program = ("import ctypes, os\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "ret = libc.unshare(0x10000000)  # CLONE_NEWUSER\n"
               "print(ret, os.strerror(ctypes.get_errno()) if ret else 'created')\n")
    r = _run(program, ns_level)
    assert r.passed, r.stderr
    assert r.stdout.startswith("-1 ") and "created" not in r.stdout, r.stdout


def test_pid_namespace_holds_only_the_program(ns_level, no_leftovers):
    program = ("import os\n"
               "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
               "print(pids, os.getpid())\n")
    r = _run(program, ns_level)
    assert r.passed, r.stderr
    pids = eval(r.stdout.split("] ")[0] + "]")  # noqa: S307 -- our own program's output
    assert len(pids) <= 3 and max(pids) < 10, r.stdout  # init (+ bwrap's) + the program


def test_server_survives_its_programs_and_leaks_nothing_between_them(no_leftovers):
    if not _available("unshare"):
        pytest.skip("isolation 'unshare' does not work on this machine")
    first = _run("import os, signal, subprocess, time\n"
                 "for d in ('/tmp', '/var/tmp', '/dev/shm', '.'):\n"
                 "    open(os.path.join(d, 'leak'), 'w').write('x')\n"
                 "subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
                 "time.sleep(0.2)\n"
                 "os.kill(-1, signal.SIGKILL)  # everything it may signal\n", "unshare")
    assert first.status in ("killed", "passed"), first.stderr  # it killed itself too
    servers = sandbox._zygote.POOL.server_pids()
    assert servers, "no pooled server"
    second = _run("import os\n"
                  "print([d for d in ('/tmp', '/var/tmp', '/dev/shm', '.')"
                  " if os.path.exists(os.path.join(d, 'leak'))])\n"
                  "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n",
                  "unshare")
    assert second.passed, second.stderr
    assert second.stdout.splitlines() == ["[]", "[1, 2]"], second.stdout
    if sandbox._is_root():
        assert second.sandbox_uid == first.sandbox_uid  # the same server ran both
    assert sandbox._zygote.POOL.server_pids() & servers, "the server was killed"
    _assert_uid_clean(second)


def test_scratch_dir_is_capped_at_the_unshare_level(no_leftovers):
    if not _available("unshare"):
        pytest.skip("isolation 'unshare' does not work on this machine")
    program = ("n = 0\n"
               "try:\n"
               "    for i in range(100):\n"
               "        open('fill%d' % i, 'wb').write(b'x' * (1 << 20))\n"
               "        n += 1\n"
               "except OSError as e:\n"
               "    print('stopped', type(e).__name__)\n"
               "print(n)\n")
    r = _run(program, "unshare", max_file_mb=8)
    assert r.passed and r.stdout.startswith("stopped OSError"), r.stdout + r.stderr
    assert int(r.stdout.split()[-1]) <= 8
