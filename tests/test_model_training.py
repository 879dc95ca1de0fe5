"""A few training steps lower the LEM loss on generated bars, for every recurrent block."""
import numpy as np
import pytest

from lem_model import compile_lem
from lem_model.features import NUM_BAR_FEATURES
from lem_model_testutils import generated_examples, tiny_model


@pytest.fixture(scope="module")
def data():
    x, y = generated_examples(n_bars=700, stride=4)
    assert x["bars"].shape[0] >= 64 and np.isfinite(x["bars"]).all() and np.isfinite(y).all()
    return x, y


@pytest.mark.parametrize("recurrent", ["tkan", "lstm", "gru"])
def test_training_lowers_the_loss(data, recurrent):
    x, y = data
    model = tiny_model(recurrent, num_features=NUM_BAR_FEATURES)
    with_metrics = recurrent == "lstm"  # the metrics' wiring is checked once (they cost tracing time)
    compile_lem(model, learning_rate=3e-3, metrics=with_metrics)
    before = model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True)
    model.fit(x, y, epochs=4, batch_size=32, shuffle=True, verbose=0)
    after = model.evaluate(x, y, batch_size=1024, verbose=0, return_dict=True)
    assert np.isfinite(after["loss"])
    assert after["loss"] < before["loss"] - 1e-4, (before["loss"], after["loss"])
    if with_metrics:  # slippage metrics are reported in bps for every path
        assert {"buy_vwap_volume_bps", "sell_twap_notional_bps", "match_vwap_abs_bps"} <= set(after)
