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


@pytest.mark.parametrize("recurrent", ["tkan", "lstm"])
@pytest.mark.parametrize("batch", [7, 1])
def test_training_context_in_batch_chunks_changes_nothing(recurrent, batch, monkeypatch):
    # the saved option `context_chunks`: in training the context block runs on batch chunks (a batch of unknown
    # size, as in the Trainer; batch 1 leaves one chunk empty). Same allocations and gradients as one pass.
    import tensorflow as tf
    from lem_model import kernels
    from lem_model.model import LargeExecutionModel
    from lem_model_testutils import ALLOC_TOL, random_inputs

    chunked = tiny_model(recurrent, context_chunks=2)
    assert LargeExecutionModel.from_config(chunked.get_config()).context_chunks == 2
    one_pass = tiny_model(recurrent)
    assert one_pass.context_chunks == 1
    one_pass.set_weights(chunked.get_weights())
    x = {k: tf.constant(v) for k, v in random_inputs(batch, seed=3, scale=2.0).items()}
    spec = {k: tf.TensorSpec([None] + list(v.shape[1:]), v.dtype) for k, v in x.items()}
    chunk_counts, kernel = [], kernels.find("in_chunks")
    monkeypatch.setitem(kernels._KERNELS, ("in_chunks", "tensorflow"),
                        lambda fn, v, n: chunk_counts.append(n) or kernel(fn, v, n))

    def step(model):
        def run(inputs):
            with tf.GradientTape() as tape:
                out = model(inputs, training=True)
                w = tf.reshape(tf.sin(tf.range(np.prod(out.shape[1:]), dtype=out.dtype)), out.shape[1:])
                loss = tf.reduce_sum(out * w)  # every output position with its own weight
            return out, tape.gradient(loss, model.trainable_weights)
        return tf.function(run, input_signature=[spec])(x)

    got, got_grads = step(chunked)
    assert chunk_counts == [2]
    ref, ref_grads = step(one_pass)
    assert chunk_counts == [2]  # one pass: no chunks
    np.testing.assert_allclose(got.numpy(), ref.numpy(), **ALLOC_TOL)  # chunks: other batch shapes
    assert len(got_grads) == len(ref_grads) > 20
    for r, g in zip(ref_grads, got_grads):
        assert g is not None
        np.testing.assert_allclose(g.numpy(), r.numpy(), atol=1e-5 * max(1.0, np.abs(r.numpy()).max()), rtol=0)
    with pytest.raises(ValueError, match="context_chunks"):
        tiny_model(recurrent, context_chunks=0)
