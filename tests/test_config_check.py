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
    # Both configs check their fields on construction (__post_init__).
    with pytest.raises(ConfigError, match=r"StudyConfig.name=5: expected str, got int"):
        dataclasses.replace(study.StudyConfig(ladder=ladder), name=5)
    with pytest.raises(ConfigError, match=r"StudyConfig.held_out=-1: expected >= 0"):
        dataclasses.replace(study.StudyConfig(ladder=ladder), held_out=-1)
    with pytest.raises(ConfigError, match=r"StudyConfig.loss_law_drop_smallest=\(9,\): one or "):
        dataclasses.replace(study.StudyConfig(ladder=ladder), loss_law_drop_smallest=[9])
    # the token multiplier now lives in the study's ladder
    with pytest.raises(ConfigError, match=r"LadderConfig.token_multipliers"):
        dataclasses.replace(ladder, token_multipliers="abc")
    with pytest.raises(ConfigError, match=r"LadderConfig.seeds=\(0, -1\): entry 1 \(-1\): "
                       r"expected >= 0"):
        dataclasses.replace(ladder, seeds=(0, -1))
    check_fields(study.StudyConfig(ladder=ladder))


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner = _Inner()
    many: tuple[_Inner, ...] = (_Inner(),)


def test_nested_dataclass_fields_are_checked_and_named_with_their_path():
    bad = _Inner()
    object.__setattr__(bad, "r", "two")  # a nested config that bypassed its own checks
    with pytest.raises(ValueError, match=r"^_Inner.r='two': expected int, got str "
                       r"\(in _Outer.inner\)$"):
        check_fields(_Outer(inner=bad))
    with pytest.raises(ValueError, match=r"\(in _Outer.many\[1\]\)$"):
        check_fields(_Outer(many=(_Inner(), bad)))
    check_fields(_Outer(inner=bad), nested=False)


def test_ranges_argument_and_numpy_scalars():
    import numpy as np
    with pytest.raises(ValueError, match=r"_Inner.r=-1: expected >= 0"):
        check_fields(_Inner(r=-1), ranges={"r": {"min": 0}})
    with pytest.raises(ValueError, match=r"_Config.sizes=\(1, -2\): entry 1 \(-2\): "
                       r"expected >= 0"):
        check_fields(_Config(sizes=(1, -2)), ranges={"sizes": {"min": 0}})
    check_fields(_Config(steps=np.int64(3), rate=np.float32(0.5)))


def _model(**kw):
    from lmscale.models import ModelConfig
    return ModelConfig(**{**dict(vocab_size=259, d_model=32, n_layers=1, n_heads=4, d_ff=64,
                                 max_seq_len=128), **kw})


def _config_cases():
    """(constructor, field, wrong-type value, wrong-range value, range message) per config."""
    from lmscale.eval import runner
    from lmscale.train import loop, optim, spec, state
    model = _model()
    run_spec = lambda **kw: spec.RunSpec(model=model, token_multiplier=1.0, **kw)  # noqa: E731
    return [
        ("ModelConfig", _model, "d_model", "32", -32, "must be a positive integer"),
        ("ModelConfig", _model, "rotary_fraction", "half", 1.5, "must lie in"),
        ("RunSpec", run_spec, "seq_len", 64.0, 1, "must be >= 2"),
        ("RunSpec", run_spec, "seed", "0", -1, "expected >= 0"),
        ("LoopConfig", loop.LoopConfig, "log_every_steps", "10", 0, "must be >= 1"),
        ("LoopConfig", loop.LoopConfig, "peak_flops_per_device", "1e12", 0.0,
         "expected >= 1"),
        ("OptimizerConfig", optim.OptimizerConfig, "lr_peak", "3e-3", -1.0, "must be > 0"),
        ("OptimizerConfig", optim.OptimizerConfig, "warmup_steps", 10.5, -1,
         "must be an int >= 0"),
        ("MeshConfig", state.MeshConfig, "tensor", "2", 0, "must be a positive int or -1"),
        ("PassUntilConfig", runner.PassUntilConfig, "k_max", "1000", 0,
         "must be a positive int"),
        ("PassUntilConfig", runner.PassUntilConfig, "temperature", "hot", 0.0, "must be > 0"),
        ("PassUntilConfig", runner.PassUntilConfig, "seed", 1.5, -3, "expected >= 0"),
        ("ValidationConfig", runner.ValidationConfig, "batch_size", "8", 0, "expected >= 1"),
        ("ValidationConfig", runner.ValidationConfig, "max_batches", 2.0, 0, "expected >= 1"),
    ]


@pytest.mark.parametrize("case", range(14))
def test_every_config_names_a_wrong_type_and_a_wrong_range(case):
    from lmscale.models import ConfigError
    cls, make, field, wrong_type, wrong_range, range_message = _config_cases()[case]
    with pytest.raises(ConfigError, match=rf"{cls}\.{field}={wrong_type!r}: expected "
                       rf"(float|int)(, got| or None, got) {type(wrong_type).__name__}"):
        make(**{field: wrong_type})
    with pytest.raises(ConfigError, match=rf"{cls}\.{field}={wrong_range!r}: .*{range_message}"):
        make(**{field: wrong_range})


def test_pass_until_top_p_outside_unit_interval_is_named():
    from lmscale.eval import runner
    from lmscale.models import ConfigError
    with pytest.raises(ConfigError, match=r"PassUntilConfig.top_p=1.5: must lie in \(0, 1\]"):
        runner.PassUntilConfig(top_p=1.5)


def test_ladder_config_fields_and_its_nested_template_are_checked():
    """LadderConfig.__post_init__ calls check_fields: types, ranges and the nested template."""
    from lmscale.models import ConfigError
    from lmscale.train.ladder import LadderConfig
    from lmscale.train.spec import RunSpec
    template = RunSpec(model=_model(name="m"), token_multiplier=1.0)
    with pytest.raises(ConfigError, match=r"^LadderConfig.seeds=\(0, '1'\): entry 1 \('1'\): "
                       r"expected int, got str$"):
        LadderConfig(template=template, models=(_model(name="m"),), seeds=(0, "1"))
    with pytest.raises(ConfigError, match=r"LadderConfig.seeds=\(0, -1\): entry 1 \(-1\): "
                       r"expected >= 0"):
        LadderConfig(template=template, models=(_model(name="m"),), seeds=(0, -1))
    ladder = LadderConfig(template=template, models=(_model(name="m"),), seeds=(0,))
    spoiled = dataclasses.replace(ladder, seeds=(0,))
    object.__setattr__(spoiled.template, "batch_size", 8.5)
    with pytest.raises(ConfigError, match=r"^RunSpec.batch_size=8.5: expected int, got float "
                       r"\(in LadderConfig.template\)$"):
        check_fields(spoiled, error=ConfigError)
