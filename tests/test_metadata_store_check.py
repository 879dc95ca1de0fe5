"""The local runner pairs a pipeline root with its ML Metadata store (`pipeline.local_runner.check_metadata_store`):
a new or emptied store for a root that holds artifacts, or another store, is refused before anything runs
and nothing is deleted. Real SQLite ML Metadata stores; no pipeline is run."""
import json
import os

import pytest

from pipeline import local_runner
from pipeline.configs import demo_config


def _config(tmp_path, **kw):
    return demo_config(root=str(tmp_path / "run")).replace(**kw)


def _tree(root) -> dict:
    """Every file under `root` with its bytes (to show nothing was deleted or rewritten)."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def _fake_artifacts(config):
    """What a previous run leaves in the pipeline root (component output directories)."""
    d = os.path.join(config.pipeline_root, "MarketDataExampleGen", "examples", "2", "Split-train")
    os.makedirs(d)
    with open(os.path.join(d, "data_tfrecord-00000-of-00001.gz"), "wb") as f:
        f.write(b"examples of the earlier run")


def test_new_pair_gets_one_store_id_and_keeps_it(tmp_path):
    config = _config(tmp_path)
    store_id = local_runner.check_metadata_store(config)
    marker = json.load(open(os.path.join(config.resolved().pipeline_root, local_runner.STORE_ID_FILE)))
    assert marker["store_id"] == store_id and len(store_id) == 36
    _fake_artifacts(config.resolved())                       # the run wrote its artifacts
    assert local_runner.check_metadata_store(config) == store_id   # same store, same root: fine


@pytest.mark.parametrize("mishap", ["truncated", "recreated_empty", "deleted", "other_store"])
def test_a_store_that_lost_its_records_refuses_to_run_and_deletes_nothing(tmp_path, mishap):
    config = _config(tmp_path).resolved()
    local_runner.check_metadata_store(config)
    _fake_artifacts(config)
    db = config.metadata_sqlite
    if mishap == "truncated":
        open(db, "wb").close()                               # an emptied SQLite file
    elif mishap == "recreated_empty":
        os.remove(db)
        local_runner.metadata_store(config)                          # a new ML Metadata schema, no records
    elif mishap == "deleted":
        os.remove(db)
    else:
        other = config.replace(metadata_path=str(tmp_path / "other.sqlite"))
        local_runner.check_metadata_store(other.replace(root=str(tmp_path / "elsewhere")))
        config = other
    before = _tree(str(tmp_path))
    with pytest.raises(local_runner.MetadataStoreMismatch, match="Nothing was deleted") as err:
        local_runner.check_metadata_store(config)
    assert config.pipeline_root in str(err.value) and config.metadata_sqlite in str(err.value)
    assert _tree(str(tmp_path)) == before


def test_artifacts_without_a_store_id_and_an_empty_store_are_refused(tmp_path):
    """A root from before store ids, or whose id file is gone, with a new store: refused too."""
    config = _config(tmp_path).resolved()
    _fake_artifacts(config)
    with pytest.raises(local_runner.MetadataStoreMismatch, match="already holds artifacts.*MarketDataExampleGen"):
        local_runner.check_metadata_store(config)
    assert not os.path.exists(os.path.join(config.pipeline_root, local_runner.STORE_ID_FILE))


def test_the_local_runner_refuses_before_running_anything(tmp_path):
    """Through `local_runner.run`: an emptied store and a root with artifacts stop the run before the
    pipeline is built (the demo data source does not even exist), with the artifacts untouched."""
    config = _config(tmp_path)
    local_runner.check_metadata_store(config)
    resolved = config.resolved()
    _fake_artifacts(resolved)
    open(resolved.metadata_sqlite, "wb").close()
    before = _tree(resolved.pipeline_root)
    with pytest.raises(local_runner.MetadataStoreMismatch, match="belongs to ML Metadata store"):
        local_runner.run(config)
    assert _tree(resolved.pipeline_root) == before
