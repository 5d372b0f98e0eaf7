"""tests/data fixtures."""
import tempfile

import pytest


@pytest.fixture(autouse=True)
def _tempdir_in_tmp_path(tmp_path, monkeypatch):
    """Keep temporary files of a data test inside its own tmp_path.

    TFDS makes an empty `tmp*tfds` directory under the system temp dir each time it builds a
    dataset whose info files are absent (every `tfds.testing.mock_data` test) and never removes
    it; without this, each run of these tests left ~40 of them in /tmp.
    """
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
