"""Trainer module pieces: the training constraints and the input pipeline (the full run_fn and the export are
exercised by tests/test_pipeline_e2e.py)."""
import numpy as np
import pytest

from components.trainer import module
from components.trainer.config import TrainingConfig
from lem_model.features import frequency_loss_weights
from lem_model.presets import paper_min_rate


def test_constraint_pairs_default_to_the_paper_recipe():
    assert module.constraint_pairs(TrainingConfig(), 12) == [(1.0 / 144, 1.0)]
    assert module.constraint_pairs(TrainingConfig(min_rates=[None, 0.05], max_rates=[1.0, 0.2]), 4) == [
        (1 / 16, 1.0), (0.05, 0.2)]
    assert paper_min_rate(8) == pytest.approx(1 / 64)
    with pytest.raises(ValueError, match="same length"):
        module.constraint_pairs(TrainingConfig(min_rates=[None], max_rates=[1.0, 0.5]), 4)


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
    # no autotuning: its model thread made each exhausted iterator's destructor wait up to 60 s (module.input_options)
    assert ds.options().autotune.enabled is False
    batches = list(ds.as_numpy_iterator())
    assert [len(y) for _, y in batches] == [8, 8, 4]  # K * batch rows, one finite pass
    x, y = batches[0]
    assert set(x) == {"bars", "min_rate", "max_rate"}
    np.testing.assert_array_equal(x["bars"][:4], bars[:4])
    np.testing.assert_array_equal(x["bars"][4:], bars[:4])
    np.testing.assert_array_equal(y[4:], labels[:4])
    np.testing.assert_allclose(x["min_rate"][:, 0], [0.25] * 4 + [0.1] * 4)
    np.testing.assert_allclose(x["max_rate"][:, 0], [1.0] * 4 + [0.5] * 4)


def test_frequency_weighting_gives_each_example_sqrt_of_min_over_its_frequency():
    from lem_model.features import BAR_FEATURE_NAMES, build_features_numpy
    rng = np.random.default_rng(1)
    w, l, n = 8, 6, 4
    t = w + l + n
    volume = rng.uniform(1, 2, (3, t)).astype(np.float32)
    quote = volume * rng.uniform(90, 110, (3, t)).astype(np.float32)
    freq = np.array([15, 90, 1440])
    timestamp = 1_700_000_000 + 60 * freq[:, None] * np.arange(t)[None, :]
    feats = build_features_numpy(volume, quote, timestamp, freq, norm_window=w, lookback=l, n_ahead=n)
    assert "log_frequency" in BAR_FEATURE_NAMES
    accessor = _Accessor(feats["bars"], feats["labels"])
    ds = module.input_fn(["f"], accessor, _TransformOutput(), batch_size=3, constraints=[(0.0, 1.0), (0.1, 0.5)],
                         shuffle=False, weighting="inverse_sqrt", min_frequency=15)
    (x, y, weights), = list(ds.as_numpy_iterator())
    np.testing.assert_allclose(weights, np.tile(np.sqrt(15 / freq), 2), rtol=1e-5)  # one per tiled row
    assert len(weights) == len(y) == len(x["bars"]) == 6
    unweighted, = list(module.input_fn(["f"], accessor, _TransformOutput(), batch_size=3, constraints=[(0.0, 1.0)],
                                       shuffle=False).as_numpy_iterator())
    assert len(unweighted) == 2  # (inputs, labels): no weights by default (the paper's recipe)
    with pytest.raises(ValueError, match="frequency_weighting"):
        frequency_loss_weights(x["bars"], "linear", 15)


def test_model_and_loss_sections_are_typed_with_one_definition_of_each_default():
    """The model section enters run_fn as `ModelConfig` (the pipeline's section class), whose defaults are the
    model's own (`lem_model.presets`); the training section's loss options are `LEMLoss`'s keyword arguments, with
    the defaults of `lem_model.presets.TRAINER_LOSS_DEFAULTS`, the library's being the paper's `LOSS_DEFAULTS`."""
    import dataclasses
    import inspect
    from components.trainer.config import ModelConfig
    from lem_model import compile_lem
    from lem_model.loss import LEMLoss
    from lem_model.model import LargeExecutionModel, build_lem
    from lem_model.presets import LOSS_DEFAULTS, TRAINER_LOSS_DEFAULTS
    from pipeline.configs import PipelineConfig
    assert type(PipelineConfig().model) is ModelConfig
    model_params = inspect.signature(LargeExecutionModel.__init__).parameters
    for name, value in ModelConfig().build_options().items():
        assert model_params[name].default == value, name
    options = TrainingConfig().loss_options()
    assert options and options == {k: TRAINER_LOSS_DEFAULTS[k] for k in options}
    assert TrainingConfig().fixed_horizon_risk is True and LOSS_DEFAULTS["fixed_horizon_risk"] is False
    loss_params = inspect.signature(LEMLoss.__init__).parameters
    assert {k: loss_params[k].default for k in LOSS_DEFAULTS} == LOSS_DEFAULTS
    # what run_fn does with the sections
    section = ModelConfig(**dataclasses.asdict(ModelConfig(hidden_size=8, num_embedding=4, num_heads=2,
                                                           fused_mlp_hidden_dim=8, recurrent="lstm")))
    model = build_lem(num_features=5, lookback=10, n_ahead=4, **section.build_options())
    training = TrainingConfig(risk_term="squared", fixed_horizon_pnl=False)
    compile_lem(model, learning_rate=1e-3, metrics=False, **training.loss_options())
    loss = model.loss
    assert (loss.risk_term, loss.fixed_horizon_risk, loss.fixed_horizon_pnl) == ("squared", True, False)
    with pytest.raises(TypeError, match="unknown loss option"):
        compile_lem(model, risk="squared")
    with pytest.raises(TypeError):
        ModelConfig(hidden=8)
