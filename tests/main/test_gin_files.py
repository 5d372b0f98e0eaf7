"""Every experiments/**/*.gin parses, and every config class it binds builds and validates.

Training files are also driven through the ladder launcher / RunSpec with a fake trainer,
so step counts and warmup are checked without compiling anything.
"""
import importlib
import pathlib
import re

import gin
import pytest

from lmscale.train import ladder
from lmscale.main import _cli
from lmscale.train import optim
from lmscale.train.spec import RunSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]
GIN_FILES = sorted(ROOT.glob("experiments/**/*.gin"))
MODELS_GIN = "experiments/models/tiny.gin"
# Values a study would supply for the REQUIRED macros the run layers declare.
REQUIRED_VALUES = {"BATCH_SIZE": "8", "SEQ_LEN": "64", "TOKEN_MULTIPLIER": "2",
                   "MODEL": "@tiny_s/model_config.ModelConfig()", "TASKS": "[]",
                   "TOKENIZER": "'byte'"}


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


def _text_with_includes(path: pathlib.Path) -> str:
    text = path.read_text()
    for inc in re.findall(r"^include\s+'([^']+)'", text, re.M):
        text += "\n" + _text_with_includes(ROOT / inc)
    return text


def _build_config_classes(text: str) -> int:
    """Builds every class bound in `text` (`[scope/]alias.Class`), in its scope."""
    aliases = dict((alias, module) for module, alias in
                   re.findall(r"^import\s+([\w.]+)\s+as\s+(\w+)", text, re.M))
    built = 0
    for scope, alias, name in sorted(set(re.findall(
            r"(?:^|@)(?:(\w+)/)?(\w+)\.([A-Z]\w*)\b", text, re.M))):
        if alias not in aliases:
            continue
        obj = getattr(importlib.import_module(aliases[alias]), name)
        if not isinstance(obj, type) or obj is RunSpec:  # RunSpec: built per run below
            continue
        with gin.config_scope(scope or None):
            if obj is ladder.LadderConfig:  # its start-up checks would meet the 8 forced
                gin.get_configurable(obj)()  # devices (tests/main/test_startup_errors.py)
            else:
                _cli.configured(obj)()
        built += 1
    return built


def test_gin_files_exist():
    names = {p.relative_to(ROOT).as_posix() for p in GIN_FILES}
    assert {"experiments/runs/train.gin", "experiments/ladder_tiny.gin", MODELS_GIN} <= names


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_gin_file_parses_and_builds(path):
    assert path.read_text().startswith("#"), f"{path}: must open with a comment"
    text = _text_with_includes(path)
    required = set(re.findall(r"^(\w+)\s*=\s*%gin\.REQUIRED", text, re.M))
    unknown = required - set(REQUIRED_VALUES)
    assert not unknown, f"{path}: add test values for REQUIRED macros {unknown}"
    set_here = {name for name, value in re.findall(r"^(\w+)\s*=\s*(.+)$", path.read_text(), re.M)
                if value.strip() != "%gin.REQUIRED"}
    bindings = [f"{m} = {REQUIRED_VALUES[m]}" for m in sorted(required - set_here)]
    files = [str(path)]
    if "MODEL" in required and "model_config" not in re.findall(r"as (\w+)", text):
        files.append(MODELS_GIN)  # supplies the shapes MODEL refers to
    _cli.parse_gin(files, bindings)
    assert _build_config_classes(text + "\n".join(bindings)) >= 1

    specs = []
    if "ladder.LadderConfig" in text:
        # The raw configurable: `_cli.configured` would also run the start-up checks
        # against this session's 8 forced devices (tests/main/test_startup_errors.py).
        ladder.train_ladder(gin.get_configurable(ladder.LadderConfig)(), "/nonexistent",
                            train_fn=lambda spec, **_: specs.append(spec) or {})
        assert len({s.model.name for s in specs}) >= 2
    elif "run_spec.RunSpec" in text and "MODEL" not in set_here:
        # A single-run file; files that set MODEL themselves (studies) build their own specs.
        specs.append(_cli.configured(RunSpec)())
    if specs:
        opt = _cli.configured(optim.OptimizerConfig)()
        for spec in specs:
            opt.warmup_for(spec.num_steps)


def test_unknown_binding_fails_naming_it():
    with pytest.raises(ValueError, match="d_modl"):
        _cli.parse_gin([MODELS_GIN], ["model_config.ModelConfig.d_modl = 3"])
