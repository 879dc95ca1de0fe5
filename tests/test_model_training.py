"""A few training steps lower the LEM loss on generated bars, for every recurrent block."""
import numpy as np
import pytest

from lem_model import compile_lem
from lem_model.features import NUM_BAR_FEATURES
from lem_model_testutils import ALLOC_TOL, generated_examples, tiny_model


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
    # `lem_model.fast_tf.TRAIN_CONTEXT_CHUNKS`: in a traced training step with >= 2 inter-op threads, the context
    # block runs on two batch chunks (batch of unknown size, as in the Trainer; batch 1 leaves one chunk empty).
    # Same allocations and gradients as one pass (one inter-op thread: no cut).
    import tensorflow as tf
    from lem_model import fast_tf
    from lem_model_testutils import random_inputs

    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 2)
    model = tiny_model(recurrent)
    x = {k: tf.constant(v) for k, v in random_inputs(batch, seed=3, scale=2.0).items()}
    spec = {k: tf.TensorSpec([None] + list(v.shape[1:]), v.dtype) for k, v in x.items()}
    chunk_counts = []
    monkeypatch.setattr(fast_tf, "in_chunks", lambda fn, v, n, f=fast_tf.in_chunks: chunk_counts.append(n) or f(fn, v, n))

    def step(inputs):
        with tf.GradientTape() as tape:
            out = model(inputs, training=True)
            w = tf.reshape(tf.sin(tf.range(np.prod(out.shape[1:]), dtype=out.dtype)), out.shape[1:])
            loss = tf.reduce_sum(out * w)  # every output position with its own weight
        return out, tape.gradient(loss, model.trainable_weights)

    got, got_grads = tf.function(step, input_signature=[spec])(x)
    assert chunk_counts == [2]
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 1)
    ref, ref_grads = tf.function(step, input_signature=[spec])(x)
    assert chunk_counts == [2]  # no cut with one inter-op thread
    np.testing.assert_allclose(got.numpy(), ref.numpy(), **ALLOC_TOL)  # chunks: other batch shapes
    assert len(got_grads) == len(ref_grads) > 20
    for r, g in zip(ref_grads, got_grads):
        assert g is not None
        np.testing.assert_allclose(g.numpy(), r.numpy(), atol=1e-5 * max(1.0, np.abs(r.numpy()).max()), rtol=0)


def test_context_chunks_only_where_they_can_run_together(monkeypatch):
    # the cut needs a traced graph, >= 2 inter-op threads and >= MIN_CHUNK_ROWS rows per chunk when the batch is known
    import tensorflow as tf
    from lem_model import fast_tf

    def chunks(batch, inter_op):
        monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: inter_op)
        seen = []
        tf.function(lambda v: seen.append(fast_tf.context_chunks(v)) or v,
                    input_signature=[tf.TensorSpec([batch, 3, 2], tf.float32)]).get_concrete_function()
        return seen[0]

    assert chunks(256, 2) == 2 and chunks(None, 2) == 2
    assert chunks(256, 1) == 1                                        # one inter-op thread: chunks would serialise
    assert chunks(2 * fast_tf.MIN_CHUNK_ROWS - 1, 2) == 1
    assert fast_tf.context_chunks(tf.zeros((256, 3, 2))) == 1   # eager: nothing runs concurrently
