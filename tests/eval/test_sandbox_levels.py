"""Which level the sandbox picks, and refusals, on machines unlike this one.

A machine without bubblewrap (or without unshare) is simulated by a PATH whose
directories hold links to every program of the real PATH except those; a non-root
caller by running the test body under ``setpriv`` as uid/gid 65534 (there, unprivileged
user namespaces decide whether the namespace levels work). The refused run is also
checked through the evaluate binary.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from lmscale import testing
from lmscale.eval import sandbox
from tests.conftest import FAST_COMPILE_ENV

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _path_without(tmp_path, *hidden) -> str:
    """A PATH with every program of the current one except `hidden`."""
    bindir = tmp_path / ("bin-without-" + "-".join(hidden))
    bindir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link = bindir / name
            if name not in hidden and not link.exists():
                link.symlink_to(os.path.join(directory, name))
    for name in hidden:
        assert not (bindir / name).exists()
    os.chmod(tmp_path, 0o755)
    return str(bindir)


# Runs under `python -I` as the caller or uid 65534: the default level, then a hostile
# program at the default and at each forced namespace level; prints JSON.
_PROBE = r"""
import json, os, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
from lmscale.eval import sandbox
victim = int(sys.argv[2])
hostile = (
    "import os, socket\n"
    "out = []\n"
    "for d in ('/tmp', '/var/tmp', '/dev/shm', os.environ.get('HOME', '.')):\n"
    "    try:\n"
    "        open(os.path.join(d, 'lmscale-probe-drop'), 'w').write('x'); out.append('wrote')\n"
    "    except OSError:\n"
    "        out.append('denied')\n"
    "try:\n"
    "    os.kill(%d, 9); out.append('killed')\n"
    "except OSError:\n"
    "    out.append('refused')\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', 9), timeout=1); out.append('net')\n"
    "except OSError as e:\n"
    "    out.append('nonet')\n"
    "print(' '.join(out))\n") % victim
report = {"uid": os.getuid()}
try:
    report["default"] = sandbox.isolation_level()
except sandbox.SandboxError as e:
    report["default"] = "error: %s" % e
for level in (None, "unshare", "bwrap"):
    try:
        r = sandbox.execute(hostile, timeout_s=10.0, isolation=level)
        report[str(level)] = [r.isolation, r.status, r.stdout.strip()]
    except sandbox.SandboxError as e:
        report[str(level)] = ["refused", str(e)]
cap = @FORK_COUNTER@
try:  # the process cap (counted per user namespace, so exact without root too)
    r = sandbox.execute(cap, timeout_s=10.0, isolation="unshare", max_processes=12)
    report["cap"] = [r.status, r.stdout.strip()]
except sandbox.SandboxError as e:
    report["cap"] = ["refused", str(e)]
print(json.dumps(report))
""".replace("@FORK_COUNTER@", repr(testing.FORK_COUNTER_PROGRAM))


def _probe(env_path, as_nobody=False):
    victim = subprocess.Popen(["sleep", "30"])
    python = sandbox._default_python() if as_nobody else sys.executable
    cmd = [python, "-I", "-c", _PROBE, str(ROOT), str(victim.pid)]
    if as_nobody:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/",
                              env={"PATH": env_path, "LANG": "C.UTF-8"})
        assert victim.poll() is None, "the probe's program killed a host process"
    finally:
        victim.kill()
        victim.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_contained(entry, level):
    isolation, status, out = entry
    assert (isolation, status) == (level, "passed"), entry
    # /tmp, /var/tmp, /dev/shm are private tmpfs (writes land there, nothing on the
    # host), HOME is the scratch dir; no host process killed, no network.
    assert out.split()[4:] == ["refused", "nonet"], entry


def test_default_without_bubblewrap_is_unshare_and_contains(tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("no unshare here")
    report = _probe(_path_without(tmp_path, "bwrap"))
    assert report["default"] == "unshare"
    _assert_contained(report["None"], "unshare")
    _assert_contained(report["unshare"], "unshare")
    assert report["bwrap"][0] == "refused" and "failed to start" in report["bwrap"][1]
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not os.path.exists(os.path.join(d, "lmscale-probe-drop"))


def test_no_namespaces_refuses_naming_what_is_missing(tmp_path):
    report = _probe(_path_without(tmp_path, "bwrap", "unshare"))
    assert report["default"] == "rlimits"
    kind, message = report["None"]
    assert kind == "refused"
    assert "'rlimits' is below the minimum 'unshare'" in message
    assert "bubblewrap" in message and "user namespaces" in message
    assert "min_isolation='rlimits'" in message


@pytest.mark.parametrize("hidden", [(), ("bwrap",), ("bwrap", "unshare")])
def test_non_root_works_in_user_namespaces_or_refuses_clearly(tmp_path, hidden):
    if not sandbox._is_root() or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to switch to an unprivileged user")
    try:
        sandbox._default_python()
    except RuntimeError as e:
        pytest.skip(f"no interpreter an unprivileged uid can run: {e}")
    report = _probe(_path_without(tmp_path, *hidden), as_nobody=True)
    assert report["uid"] == 65534
    default = report["default"]
    if default == "rlimits":  # no (working) namespaces for this user: refused, clearly
        kind, message = report["None"]
        assert kind == "refused" and "below the minimum" in message
        assert "user namespaces" in message
        return
    assert default in ("bwrap", "unshare") and default not in hidden
    _assert_contained(report["None"], default)
    for level in ("unshare", "bwrap"):
        if level in hidden or report[level][0] == "refused":
            assert "failed to start" in report[level][1], report[level]
        else:
            _assert_contained(report[level], level)
    if report["cap"][0] != "refused":
        assert report["cap"][0] == "passed" and 0 < int(report["cap"][1]) < 12, report["cap"]


@pytest.mark.slow
def test_evaluate_binary_refuses_a_code_task_without_namespaces(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **FAST_COMPILE_ENV,
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=str(ROOT))
    train = subprocess.run(
        [sys.executable, "-m", "lmscale.main.train", f"--workdir={tmp_path}",
         "--gin_file=experiments/runs/train.gin", "--gin_file=experiments/models/tiny.gin",
         "--gin_bindings=MODEL = @tiny_s/model_config.ModelConfig()",
         "--gin_bindings=TOKEN_MULTIPLIER = 0.1", "--gin_bindings=BATCH_SIZE = 4",
         "--gin_bindings=SEQ_LEN = 32",
         # Room for HumanEval's 768 new tokens after the prompt.
         "--gin_bindings=tiny_s/model_config.ModelConfig.max_seq_len = 1536",
         "--gin_bindings=train_loop.LoopConfig.eval_batches = 1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    env["PATH"] = _path_without(tmp_path, "bwrap", "unshare")
    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.main.evaluate", f"--workdir={tmp_path}",
         "--gin_file=experiments/runs/evaluate.gin",
         "--gin_bindings=TASKS = ['humaneval']", "--gin_bindings=INSTANCE_LIMIT = 1",
         "--gin_bindings=runner.ValidationConfig.enabled = False"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "SandboxError" in out and "'rlimits' is below the minimum 'unshare'" in out
    assert "bubblewrap" in out and "user namespaces" in out
