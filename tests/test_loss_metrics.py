"""LEM loss and metrics: one window rule with the NumPy evaluator, the objective's sign, finite gradients."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from lem_model import loss as lem_loss
from lem_model import slippage as sl
from lem_model.metrics import SlippageMetric, lem_metrics


def _random_allocations(b, n, seed=0, early=True):
    """[B, N, N+1, 4, 2] fractions summing to 1 over steps, some orders completing early."""
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.ones(n), size=(b, n + 1, 4, 2))
    if early:
        cut = rng.integers(1, n + 1, size=a.shape[:-1] + (1,))
        a = np.where(np.arange(n) < cut, a, 0.0)
        a /= a.sum(-1, keepdims=True)
    return np.moveaxis(a, -1, 1).astype("float32")


def _labels(b, n, seed=1):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0.0, 2.0, (b, n)), np.exp(np.cumsum(0.02 * rng.normal(size=(b, n)), 1))],
                    -1).astype("float32")


def test_keras_metric_equals_numpy_evaluator():
    b, n = 16, 5
    alloc, labels = _random_allocations(b, n), _labels(b, n)
    keras_bps = 1e4 * np.asarray(lem_loss.head_slippage(labels, alloc))
    numpy_bps = sl.evaluate_allocations(alloc, labels)
    np.testing.assert_allclose(keras_bps, numpy_bps, rtol=1e-4, atol=0.05)  # float32 vs float64, in bps
    # and through the compiled metric objects
    m = SlippageMetric("sell", "twap", "notional")
    m.update_state(labels, alloc)
    assert float(m.result()) == pytest.approx(numpy_bps[:, :n, 3, 1].mean(), abs=0.05)
    risk = SlippageMetric(None, "vwap", heads="match")
    risk.update_state(labels, alloc)
    assert float(risk.result()) == pytest.approx(np.abs(numpy_bps[:, n, [0, 2], :]).mean(), abs=0.05)
    assert len({x.name for x in lem_metrics()}) == 10


def test_soft_mask_is_zero_after_completion_unlike_sigmoid():
    # a buy that completes at bar 0 of 3 while prices rise: the soft-mask loss must see the 1-bar window
    n = 3
    alloc = np.zeros((1, n, n + 1, 4, 2), "float32")
    alloc[:, 0] = 1.0
    labels = np.array([[[1.0, 1.0], [1.0, 1.1], [1.0, 1.2]]], "float32")
    hard = np.asarray(lem_loss.head_slippage(labels, alloc))
    soft = np.asarray(lem_loss.head_slippage(labels, alloc, lem_loss.DEFAULT_MASK_SHARPNESS))
    np.testing.assert_array_equal(soft, hard)
    assert hard[0, 0, 0, 0] == 0.0                      # m=0: window is bar 0 only -> no slippage
    assert hard[0, n, 0, 0] == pytest.approx(1 / 1.1 - 1, rel=1e-5)  # match head: full window
    # the paper's sigmoid(0) = 0.5 weight on completed bars would have made the m=0 benchmark > 1
    w = np.array([1.0, 0.5, 0.5])
    assert (w * labels[0, :, 1]).sum() / w.sum() > 1.0


def test_objective_rewards_buying_below_and_selling_above_benchmark():
    n = 4
    labels = np.array([[[1.0, 1.00], [1.0, 1.01], [1.0, 1.02], [1.0, 1.03]]], "float32")  # rising prices
    front = np.zeros((1, n, n + 1, 4, 2), "float32")
    front[:, 0] = 1.0
    back = np.zeros_like(front)
    back[:, -1] = 1.0
    good = front.copy()
    good[:, :, :, 2:] = back[:, :, :, 2:]   # buy early (cheap), sell late (dear)
    bad = back.copy()
    bad[:, :, :, 2:] = front[:, :, :, 2:]   # buy late, sell early
    l_good = float(lem_loss.lem_objective(labels, good)[0])
    l_bad = float(lem_loss.lem_objective(labels, bad)[0])
    assert l_good < l_bad
    # match head: a TWAP-like schedule tracks the benchmark better than an all-at-the-end one
    twap = np.full((1, n, n + 1, 4, 2), 1.0 / n, "float32")
    d_twap = np.asarray(lem_loss.head_slippage(labels, twap))[0, n]
    d_back = np.asarray(lem_loss.head_slippage(labels, back))[0, n]
    assert np.all(np.abs(d_twap) < np.abs(d_back))


def test_loss_class_reduces_to_batch_mean_and_serializes():
    b, n = 4, 3
    alloc, labels = _random_allocations(b, n), _labels(b, n)
    loss = lem_loss.LEMLoss(mask_sharpness=200.0)
    expected = np.mean(np.asarray(lem_loss.lem_objective(labels, alloc, 200.0)))
    assert float(loss(labels, alloc)) == pytest.approx(expected, rel=1e-6)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert clone.mask_sharpness == 200.0


@pytest.mark.parametrize("case", ["zero_volume", "constant_price", "all_zero", "zero_price_bar"])
def test_gradients_finite_on_degenerate_labels(case):
    b, n = 2, 4
    labels = _labels(b, n)
    if case == "zero_volume":
        labels[..., 0] = 0.0
    elif case == "constant_price":
        labels[..., 1] = 1.0
    elif case == "all_zero":
        labels[:] = 0.0
    else:
        labels[:, 1, 1] = 0.0
    logits = tf.Variable(np.random.default_rng(0).normal(size=(b, n, n + 1, 4, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        alloc = tf.nn.softmax(logits, axis=1)
        value = tf.reduce_mean(lem_loss.lem_objective(labels, alloc))
    grad = tape.gradient(value, logits)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


def test_gradients_finite_through_the_model_on_an_all_zero_sample():
    from lem_model_testutils import TINY, random_inputs, tiny_model
    model = tiny_model("lstm")
    x = random_inputs(2)
    x["bars"][:] = 0.0
    labels = np.zeros((2, TINY["n_ahead"], 2), "float32")
    loss = lem_loss.LEMLoss()
    with tf.GradientTape() as tape:
        value = loss(labels, model(x, training=True))
    grads = tape.gradient(value, model.trainable_variables)
    assert np.isfinite(float(value))
    assert all(g is not None and np.all(np.isfinite(np.asarray(g))) for g in grads)


def _objective_by_hand(labels, alloc, k, fixed_horizon_risk=False, squared=False, fixed_horizon_pnl=True):
    """The objective from head_slippage, in NumPy: flexible heads softplus(k (D_buy - D_sell)) / k (without
    fixed_horizon_pnl all but the minimum-period-N head), match head (and with fixed_horizon_risk the
    minimum-period-N head) softplus(|D|) (squared: D^2), over 2*P*2 + 2*4 (+ 2*4) terms, P the PnL heads."""
    d = 100.0 * np.asarray(lem_loss.head_slippage(labels, alloc, lem_loss.DEFAULT_MASK_SHARPNESS), np.float64)
    n = d.shape[1] - 1
    p = n if fixed_horizon_pnl else n - 1
    softplus = lambda x: np.logaddexp(0.0, x)  # noqa: E731
    risk_of = np.square if squared else (lambda x: softplus(np.abs(x)))
    spread = d[:, :p, [0, 1]] - d[:, :p, [2, 3]]          # paths: buy-vwap, buy-twap, sell-vwap, sell-twap
    pnl = softplus(k * spread).sum((1, 2, 3)) / k
    risk = risk_of(d[:, n]).sum((1, 2))
    if fixed_horizon_risk:
        return (pnl + risk + risk_of(d[:, n - 1]).sum((1, 2))) / (2 * p * 2 + 2 * 4 * 2)
    return (pnl + risk) / (2 * p * 2 + 2 * 4)


@pytest.mark.parametrize("k", [1.0, 8.0])
def test_pnl_sharpness_scales_the_flexible_heads_softplus(k):
    b, n = 6, 4
    alloc, labels = _random_allocations(b, n, seed=3), _labels(b, n, seed=4)
    got = np.asarray(lem_loss.lem_objective(labels, alloc, pnl_sharpness=k))
    np.testing.assert_allclose(got, _objective_by_hand(labels, alloc, k), rtol=1e-5)
    if k == 1.0:  # the paper's objective is the default
        np.testing.assert_array_equal(got, np.asarray(lem_loss.lem_objective(labels, alloc)))


def test_pnl_sharpness_penalises_a_spread_that_varies_more():
    # two flexible-head outcomes with the same mean spread D_buy - D_sell of 0 (percent): always 0, or -1 / +1.
    # k = 1 barely tells them apart (softplus is nearly linear there); k = 8 charges the varying one clearly more.
    softplus = lambda x: np.logaddexp(0.0, x)  # noqa: E731
    gap = {k: (softplus(-k) + softplus(k)) / (2 * k) - softplus(0.0) / k for k in (1.0, 8.0)}
    assert gap[8.0] > 3 * gap[1.0] > 0
    loss = lem_loss.LEMLoss(pnl_sharpness=8.0)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert clone.pnl_sharpness == 8.0
    with pytest.raises(ValueError, match="pnl_sharpness"):
        lem_loss.lem_objective(_labels(1, 3), _random_allocations(1, 3), pnl_sharpness=0.0)


def test_fixed_horizon_risk_adds_the_risk_term_on_the_minimum_period_n_head():
    b, n = 6, 4
    alloc, labels = _random_allocations(b, n, seed=5), _labels(b, n, seed=6)
    got = np.asarray(lem_loss.lem_objective(labels, alloc, fixed_horizon_risk=True))
    np.testing.assert_allclose(got, _objective_by_hand(labels, alloc, 1.0, fixed_horizon_risk=True), rtol=1e-5)
    assert not np.allclose(got, np.asarray(lem_loss.lem_objective(labels, alloc)), rtol=1e-3)
    # the term reaches the minimum-period-N head's allocations: its gradient there is non-zero only with it
    logits = tf.Variable(np.log(alloc + 1e-3))
    grads = {}
    for flag in (False, True):
        with tf.GradientTape() as tape:
            a = tf.nn.softmax(logits, axis=1)
            value = tf.reduce_mean(lem_loss.lem_objective(labels, a, fixed_horizon_risk=flag))
        grads[flag] = tape.gradient(value, logits).numpy()[:, :, n - 1]
    assert np.abs(grads[True] - grads[False]).max() > 1e-4
    clone = keras.losses.deserialize(keras.losses.serialize(lem_loss.LEMLoss(fixed_horizon_risk=True)))
    assert clone.fixed_horizon_risk is True


def test_fixed_horizon_pnl_false_trains_the_minimum_period_n_head_as_a_tracker():
    b, n = 6, 4
    alloc, labels = _random_allocations(b, n, seed=9), _labels(b, n, seed=10)
    got = np.asarray(lem_loss.lem_objective(labels, alloc, fixed_horizon_risk=True, fixed_horizon_pnl=False))
    np.testing.assert_allclose(got, _objective_by_hand(labels, alloc, 1.0, True, fixed_horizon_pnl=False), rtol=1e-5)
    assert not np.allclose(got, np.asarray(lem_loss.lem_objective(labels, alloc, fixed_horizon_risk=True)), rtol=1e-3)
    # the other PnL heads keep their term: the gradient on head 0 is the same up to the denominator's scale
    logits = tf.Variable(np.log(alloc + 1e-3))
    grads = {}
    for pnl in (True, False):
        with tf.GradientTape() as tape:
            a = tf.nn.softmax(logits, axis=1)
            value = tf.reduce_mean(lem_loss.lem_objective(labels, a, fixed_horizon_risk=True, fixed_horizon_pnl=pnl))
        grads[pnl] = tape.gradient(value, logits).numpy()
    scale = (2 * n * 2 + 2 * 4 * 2) / (2 * (n - 1) * 2 + 2 * 4 * 2)
    np.testing.assert_allclose(grads[False][:, :, 0], grads[True][:, :, 0] * scale, rtol=1e-4, atol=1e-9)
    assert np.abs(grads[False][:, :, n - 1] - grads[True][:, :, n - 1] * scale).max() > 1e-4
    clone = keras.losses.deserialize(keras.losses.serialize(
        lem_loss.LEMLoss(fixed_horizon_risk=True, fixed_horizon_pnl=False)))
    assert clone.fixed_horizon_pnl is False
    with pytest.raises(ValueError, match="fixed_horizon_risk"):
        lem_loss.LEMLoss(fixed_horizon_risk=False, fixed_horizon_pnl=False)


@pytest.mark.parametrize("fixed_horizon_risk", [False, True])
def test_squared_risk_term_is_d_squared_on_the_risk_heads(fixed_horizon_risk):
    b, n = 6, 4
    alloc, labels = _random_allocations(b, n, seed=7), _labels(b, n, seed=8)
    got = np.asarray(lem_loss.lem_objective(labels, alloc, fixed_horizon_risk=fixed_horizon_risk, risk_term="squared"))
    np.testing.assert_allclose(got, _objective_by_hand(labels, alloc, 1.0, fixed_horizon_risk, squared=True), rtol=1e-5)
    assert not np.allclose(got, np.asarray(lem_loss.lem_objective(labels, alloc, fixed_horizon_risk=fixed_horizon_risk)),
                           rtol=1e-3)
    # the paper's form is the default
    np.testing.assert_array_equal(np.asarray(lem_loss.lem_objective(labels, alloc, risk_term="softplus_abs")),
                                  np.asarray(lem_loss.lem_objective(labels, alloc)))


def test_risk_term_is_saved_with_the_loss_and_checked():
    clone = keras.losses.deserialize(keras.losses.serialize(lem_loss.LEMLoss(risk_term="squared")))
    assert clone.risk_term == "squared"
    with pytest.raises(ValueError, match="risk_term"):
        lem_loss.LEMLoss(risk_term="square")
    with pytest.raises(ValueError, match="risk_term"):
        lem_loss.lem_objective(_labels(1, 3), _random_allocations(1, 3), risk_term="abs")


def test_compile_lem_trains_with_the_risk_term_it_is_given():
    from lem_model.model import compile_lem
    from lem_model_testutils import tiny_model
    assert compile_lem(tiny_model("lstm"), risk_term="squared", metrics=False).loss.risk_term == "squared"
    assert compile_lem(tiny_model("lstm"), metrics=False).loss.risk_term == "softplus_abs"   # the paper's
