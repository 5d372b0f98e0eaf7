"""Fault injection for tests: the train binary, SIGKILLed inside the checkpoint write of a step.

  python -m tests.train.kill_during_save <step> <lmscale.main.train flags...>

Wraps `lmscale.train.checkpoints.save` (the training loop calls it through the module) so
that, once the save of `<step>` has started, the process SIGKILLs itself as soon as orbax's
temporary directory `<step>.orbax-checkpoint-tmp*` holds files: after the write began,
before the commit rename. The library itself carries no such hook.
"""
import os
import pathlib
import signal
import sys
import time

from absl import app

from lmscale.main import train as train_main
from lmscale.train import checkpoints


def _kill_while_writing(directory: pathlib.Path, step: int, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(any(p.rglob("*")) for p in directory.glob(f"{step}.orbax-checkpoint-tmp*")):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.001)
    raise RuntimeError(f"kill_during_save: never saw the temporary directory of step {step}")


def install(kill_step: int) -> None:
    """Replaces `checkpoints.save` with a save that kills the process during `kill_step`."""
    real_save = checkpoints.save

    def save(manager, step, *args, **kwargs):
        real_save(manager, step, *args, **kwargs)
        if step == kill_step:
            _kill_while_writing(pathlib.Path(manager.directory), step)

    checkpoints.save = save


if __name__ == "__main__":
    install(int(sys.argv.pop(1)))
    app.run(train_main.main)
