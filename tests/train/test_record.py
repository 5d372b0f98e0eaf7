"""RunRecord: the typed run.json, its one C = 6 N D, the loss unit, and its errors."""
import json

import pytest

from lmscale.testing import tiny_config
from lmscale.train import record as record_lib
from lmscale.train.record import RunRecord, RunRecordError
from lmscale.train.spec import RunSpec

SPEC = RunSpec(tiny_config(), seq_len=16, batch_size=4, num_tokens=640, seed=2)


def test_from_spec_save_load_round_trip(tmp_path):
    rec = RunRecord.from_spec(SPEC, mesh={"data": 1, "fsdp": 1, "tensor": 1})
    assert rec.status == "running" and rec.N == SPEC.num_params_non_embedding
    assert rec.D == SPEC.total_tokens == 640 and rec.tokens_per_step == 64
    assert rec.flops == record_lib.flops(rec.N, 640) == 6.0 * rec.N * 640
    assert rec.flops_at(5) == 6.0 * rec.N * 320 and rec.tokens_at(5) == 320
    rec.save(tmp_path)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    assert RunRecord.load(tmp_path) == rec
    # One way to read a record: its attributes (the dict-style path is gone).
    assert not hasattr(rec, "get") and rec.to_dict()["num_steps"] == rec.num_steps
    with pytest.raises(TypeError):
        rec["num_steps"]  # pylint: disable=pointless-statement
    assert json.loads((tmp_path / "run.json").read_text())["format_version"] == 1


def test_loss_unit_follows_the_vocabulary():
    assert record_lib.loss_unit("byte") == "nats/byte"
    assert record_lib.loss_unit("/tmp/spm.model") == "nats/token"
    assert record_lib.loss_unit("tokenizers:/tmp/t.json") == "nats/token"


def test_missing_corrupt_old_and_incomplete_run_json_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        RunRecord.load(tmp_path)
    path = tmp_path / "run.json"
    path.write_text("{not json")
    with pytest.raises(RunRecordError, match=f"{path}: not valid JSON"):
        RunRecord.load(tmp_path)
    data = RunRecord.from_spec(SPEC).to_dict()
    old = dict(data)
    del old["format_version"], old["loss_unit"]
    path.write_text(json.dumps(old))
    with pytest.raises(RunRecordError, match=f"{path}: run.json format_version=None"):
        RunRecord.load(tmp_path)
    incomplete = dict(data)
    del incomplete["tokens_per_step"]
    path.write_text(json.dumps(incomplete))
    with pytest.raises(RunRecordError, match=r"lacks field\(s\) \['tokens_per_step'\]"):
        RunRecord.load(tmp_path)
    path.write_text(json.dumps(dict(data, status="paused")))
    with pytest.raises(RunRecordError, match="status='paused'"):
        RunRecord.load(tmp_path)
