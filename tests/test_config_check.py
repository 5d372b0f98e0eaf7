"""check_fields: a config field of the wrong type or range names class, field and value."""
import dataclasses

import pytest

from lmscale.config_check import check_fields


@dataclasses.dataclass(frozen=True)
class _Inner:
    r: int = 2


@dataclasses.dataclass(frozen=True)
class _Config:
    steps: int = 1
    rate: float = 0.5
    name: str = "x"
    flag: bool = False
    sizes: tuple[int, ...] = (1, 2)
    limit: int | None = None
    pair: tuple[str, float] = ("a", 1.0)
    inner: _Inner = _Inner()
    batch: int = dataclasses.field(default=8, metadata={"min": 1})
    mode: str = dataclasses.field(default="a", metadata={"choices": ("a", "b")})


@pytest.mark.parametrize("field, value, expected", [
    ("steps", "3", r"_Config.steps='3': expected int, got str"),
    ("steps", True, r"_Config.steps=True: expected int, got bool"),
    ("rate", "abc", r"_Config.rate='abc': expected float, got str"),
    ("flag", 1, r"_Config.flag=1: expected bool"),
    ("sizes", (1, "2"), r"_Config.sizes=\(1, '2'\): entry 1 \('2'\): expected int"),
    ("sizes", 3, r"_Config.sizes=3: expected a sequence of int"),
    ("limit", 2.5, r"_Config.limit=2.5: expected int or None"),
    ("pair", ("a",), r"_Config.pair=\('a',\): expected 2 entries"),
    ("inner", 3, r"_Config.inner=3: expected _Inner, got int"),
    ("batch", -8, r"_Config.batch=-8: expected >= 1"),
    ("mode", "c", r"_Config.mode='c': expected one of \['a', 'b'\]"),
])
def test_bad_field_is_named(field, value, expected):
    with pytest.raises(ValueError, match=expected):
        check_fields(dataclasses.replace(_Config(), **{field: value}))


def test_good_values_pass_and_lists_stand_for_tuples():
    check_fields(_Config())
    check_fields(_Config(rate=1, sizes=[3, 4], limit=5, pair=["b", 2]))


def test_study_and_ladder_config_bad_fields_are_named():
    from lmscale.models import ConfigError, ModelConfig
    from lmscale.report import study
    models = [ModelConfig(vocab_size=259, d_model=w, n_layers=1, n_heads=w // 8, head_dim=8,
                          d_ff=2 * w, max_seq_len=128, name=f"m{w}") for w in (16, 24, 32, 40)]
    from lmscale.train.ladder import LadderConfig
    from lmscale.train.spec import RunSpec
    ladder = LadderConfig(template=RunSpec(model=models[0], token_multiplier=1.0),
                          models=models)
    config = dataclasses.replace(study.StudyConfig(ladder=ladder), name=5)
    with pytest.raises(ConfigError, match=r"StudyConfig.name=5: expected str, got int"):
        check_fields(config, error=ConfigError)
    # the token multiplier now lives in the study's ladder
    with pytest.raises(ConfigError, match=r"LadderConfig.token_multipliers"):
        check_fields(dataclasses.replace(ladder, token_multipliers="abc"), error=ConfigError)
    check_fields(study.StudyConfig(ladder=ladder))
