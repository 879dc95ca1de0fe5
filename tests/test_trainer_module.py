"""Trainer module pieces: the training constraints and the input pipeline (the full run_fn and the export are
exercised by tests/test_pipeline_e2e.py)."""
import numpy as np
import pytest

from components.trainer import export, module


def test_constraint_pairs_default_to_the_paper_recipe():
    assert module.constraint_pairs({}, 12) == [(1.0 / 144, 1.0)]
    assert module.constraint_pairs({"min_rates": [None, 0.05], "max_rates": [1.0, 0.2]}, 4) == [(1 / 16, 1.0),
                                                                                                 (0.05, 0.2)]
    assert export.default_min_rate(8) == pytest.approx(1 / 64)
    with pytest.raises(ValueError, match="same length"):
        module.constraint_pairs({"min_rates": [None], "max_rates": [1.0, 0.5]}, 4)


class _Accessor:
    """Stands in for TFX's DataAccessor: yields (features, labels) batches like tf_dataset_factory does."""

    def __init__(self, bars, labels):
        self.bars, self.labels = bars, labels
        self.options = None

    def tf_dataset_factory(self, file_pattern, options, schema):
        import tensorflow as tf
        self.options = options
        ds = tf.data.Dataset.from_tensor_slices(({"bars": self.bars, "origin_time": np.arange(len(self.bars))},
                                                 self.labels))
        return ds.batch(options.batch_size)


class _TransformOutput:
    class transformed_metadata:  # noqa: N801 - mimics the attribute
        schema = None


def test_input_fn_tiles_each_batch_once_per_constraint_configuration():
    rng = np.random.default_rng(0)
    bars = rng.normal(size=(10, 6, 3)).astype(np.float32)
    labels = rng.random((10, 2, 2)).astype(np.float32)
    accessor = _Accessor(bars, labels)
    constraints = [(0.25, 1.0), (0.1, 0.5)]
    ds = module.input_fn(["f"], accessor, _TransformOutput(), batch_size=4, constraints=constraints, shuffle=True,
                         seed=7)
    assert accessor.options.shuffle and accessor.options.num_epochs == 1 and accessor.options.label_key == "labels"
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [8, 8, 4]  # K * batch rows, one finite pass
    x, y = batches[0]
    assert set(x) == {"bars", "min_rate", "max_rate"}
    np.testing.assert_array_equal(x["bars"][:4], bars[:4])
    np.testing.assert_array_equal(x["bars"][4:], bars[:4])
    np.testing.assert_array_equal(y[4:], labels[:4])
    np.testing.assert_allclose(x["min_rate"][:, 0], [0.25] * 4 + [0.1] * 4)
    np.testing.assert_allclose(x["max_rate"][:, 0], [1.0] * 4 + [0.5] * 4)
