"""The console shows progress lines and warnings; the log file holds the detail."""
import io
import logging as std_logging

from absl import logging
import pytest

from lmscale import logs


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def restore_logging():
    root = std_logging.getLogger()
    handlers, level = list(root.handlers), root.level
    state = dict(logs._state)  # pylint: disable=protected-access
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for handler in (logs._state["file_handler"],):  # pylint: disable=protected-access
        if handler is not None:
            handler.close()
    logs._state.update(state)  # pylint: disable=protected-access


def test_plain_lines_every_ten_percent_with_eta_and_a_last_line():
    out, clock = io.StringIO(), Clock()
    progress = logs.stage("train", total=100, unit="steps", stream=out, bar=False,
                          every_pct=10, every_s=1e9, clock=clock)
    for _ in range(100):
        clock.t += 0.5
        progress.update(1, note="loss 3.2")
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train 0/100 steps (0%) | 0s"
    assert len(lines) == 1 + 9 + 1, lines  # start, every 10% up to 90%, close
    assert lines[1] == "train 10/100 steps (10%) | 5s, ETA 45s | loss 3.2"
    assert lines[-1] == "train 100/100 steps (100%) | 50s | loss 3.2"
    progress.close()  # idempotent
    assert len(out.getvalue().splitlines()) == 11


def test_plain_lines_every_m_seconds_when_total_is_unknown():
    out, clock = io.StringIO(), Clock()
    progress = logs.stage("evaluate", unit="units", stream=out, bar=False, every_s=30,
                          clock=clock)
    for _ in range(10):
        clock.t += 10
        progress.update()
    assert out.getvalue().splitlines()[1:] == ["evaluate 3 units | 30s",
                                              "evaluate 6 units | 1m00s",
                                              "evaluate 9 units | 1m30s"]
    assert progress.eta_s() is None
    progress.set_total(20)
    assert progress.eta_s() == pytest.approx(100.0)


def test_bar_on_a_terminal_redraws_in_place():
    pytest.importorskip("tqdm")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    with logs.stage("fit", total=4, unit="laws", stream=out) as progress:
        for _ in range(4):
            progress.update(1)
    text = out.getvalue()
    assert "\r" in text and "fit" in text and "4/4" in text
    assert text.count("\n") <= 1  # one line, redrawn


def test_setup_sends_info_to_the_file_and_warnings_to_the_console(tmp_path, restore_logging):
    out = io.StringIO()
    path = logs.setup(str(tmp_path), "train", "quiet", stream=out)
    assert path.startswith(str(tmp_path / "logs" / "train."))
    logging.info("orbax-like detail %d", 1)
    logging.warning("a warning")
    logging.warning("a warning")  # shown once on the console, twice in the file
    with logs.stage("train", total=2, stream=out, bar=False) as progress:
        progress.update(2)
    logs._state["file_handler"].flush()  # pylint: disable=protected-access
    console = out.getvalue()
    text = open(path, encoding="utf-8").read()
    assert "orbax-like detail 1" in text and "a warning" in text and "train 2/2" in text
    assert "orbax-like detail" not in console
    assert console.count("WARNING absl: a warning") == 1 and text.count("a warning") == 2
    logging.error("an error")
    assert "ERROR absl: an error" in out.getvalue()
    assert console.count("train 2/2") == 1  # not echoed again by the console handler

    out_info = io.StringIO()
    logs.setup(str(tmp_path), "train", "info", stream=out_info)
    logging.info("detail again")
    assert "detail again" in out_info.getvalue()
    with pytest.raises(ValueError, match="--console='loud'"):
        logs.setup(str(tmp_path), "train", "loud")


def test_numeric_python_warnings_go_to_the_file_only_on_a_quiet_console(tmp_path,
                                                                        restore_logging):
    import warnings  # pylint: disable=import-outside-toplevel
    out = io.StringIO()
    path = logs.setup(str(tmp_path), "study", "quiet", stream=out)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("overflow encountered in exp", RuntimeWarning)
        warnings.warn("a config option is deprecated", UserWarning)
    logs._state["file_handler"].flush()  # pylint: disable=protected-access
    text = open(path, encoding="utf-8").read()
    assert "overflow encountered in exp" in text
    assert "overflow encountered" not in out.getvalue()
    assert "a config option is deprecated" in out.getvalue()  # other warnings still shown

    out_info = io.StringIO()
    logs.setup(str(tmp_path), "study", "info", stream=out_info)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("overflow encountered in power", RuntimeWarning)
    assert "overflow encountered in power" in out_info.getvalue()


def test_stages_opened_while_muted_go_to_the_file_only(tmp_path, restore_logging):
    out = io.StringIO()
    path = logs.setup(str(tmp_path), "study", "quiet", stream=out)
    with logs.stage("probe", total=2, unit="parts", stream=out, bar=False) as outer:
        with logs.muted():
            with logs.stage("evaluate", total=1, unit="units", stream=out, bar=False) as inner:
                inner.update(1)
            outer.update(1, note="w32")
        outer.update(1, note="w48")
    with logs.stage("train", total=1, stream=out, bar=False) as after:  # unmuted again
        after.update(1)
    logs._state["file_handler"].flush()  # pylint: disable=protected-access
    console, text = out.getvalue(), open(path, encoding="utf-8").read()
    assert "evaluate 1/1 units" in text and "evaluate" not in console
    assert "probe 1/2 parts" in console and "probe 2/2 parts" in console
    assert "train 1/1" in console
