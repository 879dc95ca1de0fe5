"""Each block's kernel (`lem_model.kernels`) computes the block's definition (its layer's `call` with
implementation="reference") on the same weights, in values and gradients: the kernels' building blocks (`dense` on
rank-3 inputs, `glu` on kernel halves, `matmul_t` by the adjoint flag, `layer_norm` on Keras' LayerNormalization
weights), each layer, and the whole model ("auto" vs "reference") in eager, traced-inference (XLA) and
traced-training graphs, under TensorFlow and under JAX. Also the registry's switch, and that no kernel module
imports the model's modules. (The TKAN's kernel: tests/test_model_tkan.py.)"""
import ast
import os

import keras
import numpy as np
import pytest
from keras import ops

from lem_model import kernels
from lem_model.kernels.generic import dense, glu, layer_norm
from lem_model.kernels.tensorflow_kernels import MATMUL_T_NARROW, matmul_t
from lem_model.layers import FeatureEmbedding, VariableSelectionNetwork


def _rng_arrays(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in shapes]


def spy(monkeypatch, name, calls=None):
    """Calls of kernel `name` that returned a result, recorded (by name) in `calls` (a new list by default),
    which is returned."""
    kernel, calls = kernels.find(name), [] if calls is None else calls
    assert kernel is not None, name

    def recorded(*args, **kwargs):
        out = kernel(*args, **kwargs)
        calls.append(name)
        return out

    monkeypatch.setitem(kernels._KERNELS, (name, keras.backend.backend()), recorded)
    return calls


# --- the registry -----------------------------------------------------------------------------------------------

def test_registry_switch_and_fallback(monkeypatch):
    def declines(x):
        raise NotImplementedError("not this call")

    monkeypatch.setitem(kernels._KERNELS, ("test_kernel", keras.backend.backend()), lambda x: x + 1)
    monkeypatch.setitem(kernels._KERNELS, ("test_declines", keras.backend.backend()), declines)
    assert kernels.run("test_kernel", "auto", 1) == 2 and kernels.run("test_kernel", "fast", 1) == 2
    assert kernels.run("test_kernel", "reference", 1) is None               # the definition
    assert kernels.run("no_such_kernel", "fast", 1) is None                  # none registered: the definition
    assert kernels.run("test_declines", "auto", 1) is None                   # declined: the definition
    with pytest.raises(ValueError, match="not this call"):
        kernels.run("test_declines", "fast", 1)                              # "fast": declining is an error


def test_no_kernel_module_imports_the_model():
    """Kernel modules take tensors and import nothing from `lem_model` but the registry and `lem_model.primitives`."""
    folder = os.path.dirname(kernels.__file__)
    allowed = {"lem_model.kernels", "lem_model.primitives"}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(folder, name), encoding="utf-8").read())
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for module in modules:
                if module.startswith("lem_model"):
                    assert module in allowed, f"{name} imports {module}"


# --- the kernels' building blocks -------------------------------------------------------------------------------

def test_dense_on_rank3_equals_broadcast_matmul():
    x, w, b = _rng_arrays((3, 5, 4), (4, 6), (6,))
    want = np.tanh(np.einsum("btd,do->bto", x, w) + b)
    got = np.asarray(dense(x, w, b, ops.tanh))
    assert got.shape == (3, 5, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.asarray(dense(x[0], w)), x[0] @ w, atol=1e-5)  # rank 2, no bias


def test_glu_equals_split_formulation():
    x, w, b = _rng_arrays((2, 7, 4), (4, 10), (10,), seed=1)
    z = np.einsum("btd,do->bto", x, w) + b
    want = 1.0 / (1.0 + np.exp(-z[..., :5])) * z[..., 5:]
    np.testing.assert_allclose(np.asarray(glu(x, w, b)), want, atol=1e-5)


@pytest.mark.parametrize("n", [1, MATMUL_T_NARROW + 1])  # both forms: (b^T a)^T for narrow b, a's adjoint else
@pytest.mark.parametrize("static", [True, False])        # n known when traced, or decided at run time
def test_matmul_t_and_its_gradients_equal_the_transposed_product(n, static):
    import tensorflow as tf

    a, b, g = (tf.constant(v) for v in _rng_arrays((3, 4, 5), (3, 4, n), (3, 5, n), seed=6))
    spec = [tf.TensorSpec((3, 4, 5)), tf.TensorSpec((3, 4, n) if static else (3, 4, None))]

    @tf.function(input_signature=spec)
    def value_and_grads(a, b):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([a, b])
            got = matmul_t(a, b)
            want = tf.matmul(tf.transpose(a, (0, 2, 1)), b)
            got_loss, want_loss = tf.reduce_sum(got * g), tf.reduce_sum(want * g)
        return got, want, tape.gradient(got_loss, [a, b]), tape.gradient(want_loss, [a, b])

    got, want, got_grads, want_grads = value_and_grads(a, b)
    assert got.shape == (3, 5, n)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
    for got_grad, want_grad in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), atol=1e-5)
    np.testing.assert_allclose(np.asarray(matmul_t(a[0], b[0])), np.asarray(a[0]).T @ np.asarray(b[0]), atol=1e-5)


def test_layer_norm_equals_keras_layer_norm():
    (x,) = _rng_arrays((4, 9, 12), seed=2)
    x = 3.0 * x + 5.0  # an offset and scale the normalisation must remove
    norm = keras.layers.LayerNormalization(epsilon=1e-5)
    norm.build(x.shape)
    gamma, beta = _rng_arrays((12,), (12,), seed=3)
    norm.set_weights([gamma, beta])
    np.testing.assert_allclose(np.asarray(layer_norm(x, norm.gamma, norm.beta, norm.epsilon)), np.asarray(norm(x)),
                               atol=2e-5)


# --- each block: its kernel against its definition -------------------------------------------------------------

def _values_and_grads(fn, weights, *inputs):
    """fn(*inputs) and the gradients of a fixed random projection of it w.r.t. the inputs and `weights`."""
    import tensorflow as tf
    inputs = [tf.constant(v) for v in inputs]
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        y = fn(*inputs)
        loss = tf.reduce_sum(tf.sin(3.0 * y))
    return [y] + tape.gradient(loss, inputs + list(weights))


def _assert_same(want, got, names, scale=3e-5):
    assert len(want) == len(got) == len(names)
    for w, g, name in zip(want, got, names):
        assert g is not None, name
        w = np.asarray(w)  # float32 sums in another order: errors scale with the tensor's largest entries
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=scale * max(np.abs(w).max(), 1e-3),
                                   err_msg=name)


def _both(layer, fn, *inputs):
    """fn's values and gradients with `layer` computing its definition, then its kernel ("fast")."""
    out = []
    for implementation in ("reference", "fast"):
        layer.implementation = implementation
        out.append(_values_and_grads(fn, layer.trainable_weights, *inputs))
    return out


# Whole-model gradients, kernels against definitions: a loss whose terms nearly cancel amplifies float32
# rounding. Measured over 8 random initialisations (TF, this file's training step) the worst tensor's
# difference reached 1.4e-4 (TKAN) and 7.4e-4 (LSTM) of its largest entry; under JAX 1.3e-4 here and 2e-4 on
# the CI machine. Weights are seeded, so each run repeats one computation; 0.1 % in one weight reads 2e-2.
MODEL_GRAD_TOL = 1e-3


def _randomised(layer, seed):
    rng = np.random.default_rng(seed)
    for v in layer.weights:  # non-zero biases and norm offsets: every term matters
        v.assign(np.asarray(v) + rng.normal(scale=0.3, size=v.shape).astype("float32"))
    return layer


@pytest.mark.parametrize("units", [6, 4])  # units == E: identity skips in the variable GRNs; else linear skips
def test_embed_and_select_kernel_equals_vsn_of_embeddings(units, monkeypatch):
    b, t, f, e = 3, 5, 4, 6
    keras.utils.set_random_seed(5)
    embedding, vsn = FeatureEmbedding(e), VariableSelectionNetwork(units, implementation="reference")
    embedding.build((b, t, f))
    vsn.build((b, t, f, e))
    _randomised(embedding, 4), _randomised(vsn, 4)
    assert (vsn.var_grn.w_skip is None) == (units == e)
    (x,) = _rng_arrays((b, t, f), seed=4)
    weights = embedding.trainable_weights + vsn.trainable_weights
    calls = spy(monkeypatch, "embed_and_select")
    want = _values_and_grads(lambda v: vsn(embedding(v)), weights, x)
    kernel = kernels.find("embed_and_select")
    got = _values_and_grads(lambda v: kernel(v, embedding.kernel, embedding.bias, vsn.weight_grn.kernel_weights(),
                                             vsn.var_grn.kernel_weights()), weights, x)
    assert calls == ["embed_and_select"] and got[0].shape == (b, t, units)
    _assert_same(want, got, ["output", "x"] + [v.path for v in weights], scale=3e-5)


@pytest.mark.parametrize("groups,d_in,out", [(None, 5, 6), (None, 6, 6), (3, 4, 4), (3, 4, 6)])
def test_grn_kernel_equals_definition(groups, d_in, out, monkeypatch):
    from lem_model.layers import GatedResidualNetwork
    layer = GatedResidualNetwork(7, output_dim=out, groups=groups)
    shape = (2, 9, d_in) if groups is None else (groups, 9, d_in)
    layer.build(shape)
    _randomised(layer, 1)
    (x,) = _rng_arrays(shape, seed=2)
    calls = spy(monkeypatch, "grn")
    want, got = _both(layer, lambda v: layer(v), x)
    assert calls == ["grn"]
    _assert_same(want, got, ["output", "x"] + [v.path for v in layer.trainable_weights])


def test_gate_add_norm_and_attention_kernels_equal_definitions(monkeypatch):
    from lem_model.layers import CausalAttention, GateAddNorm
    gate, att = GateAddNorm(8), CausalAttention(2)
    gate.build((2, 5, 8))
    att.build((2, 5, 8), (2, 11, 8))
    _randomised(gate, 3), _randomised(att, 4)
    x, skip, memory = _rng_arrays((2, 5, 8), (2, 5, 8), (2, 11, 8), seed=5)
    calls = spy(monkeypatch, "attention", spy(monkeypatch, "gate_add_norm"))
    names = lambda layer, n: ["output"] + [f"input {i}" for i in range(n)] + [v.path for v in layer.trainable_weights]
    _assert_same(*_both(gate, lambda a, b: gate(a, b), x, skip), names(gate, 2))
    _assert_same(*_both(att, lambda q, m: att(q, m), x, memory), names(att, 2))
    assert calls == ["gate_add_norm", "attention"]


@pytest.mark.parametrize("batch", [3, MATMUL_T_NARROW + 4])  # both forms of the feature-major products
@pytest.mark.parametrize("num_layers, tilt_bound", [(1, 0.0), (2, 0.0), (2, 0.3)])
def test_allocator_kernel_equals_definition(batch, num_layers, tilt_bound, monkeypatch):
    from lem_model.layers import StepwiseFusedAllocator
    n, p, d = 4, 6, 5
    layer = StepwiseFusedAllocator(n, p, 7, num_layers=num_layers, clip_sharpness=30.0, tilt_bound=tilt_bound)
    layer.build((batch, n, d))
    _randomised(layer, 6)
    x, = _rng_arrays((batch, n, d), seed=7)
    rng = np.random.default_rng(8)
    lo = rng.uniform(0.0, 0.1, (batch, 1)).astype("float32")
    hi = rng.uniform(0.3, 1.0, (batch, 1)).astype("float32")
    names = ["output", "inputs", "min_rate", "max_rate"] + [v.path for v in layer.trainable_weights]
    calls = spy(monkeypatch, "allocate")
    want, got = _both(layer, lambda *a: layer(*a), x, lo, hi)
    _assert_same(want, got, names)
    paths = (np.arange(batch) * 5) % p
    want_paths, got_paths = _both(layer, lambda *a: layer(*a, paths=paths), x, lo, hi)
    np.testing.assert_allclose(np.asarray(want_paths[0]), np.asarray(want[0])[np.arange(batch), :, paths], atol=1e-6)
    _assert_same(want_paths, got_paths, names)
    assert calls == ["allocate", "allocate"]


# --- the whole model: implementation="auto" against "reference" -----------------------------------------------

def _both_forms(recurrent, seed=0, **options):
    from lem_model_testutils import tiny_model
    keras.utils.set_random_seed(seed)  # the same weights in every run: float32 tolerances hold for one computation
    fast_model = tiny_model(recurrent, implementation="auto", **options)
    reference = tiny_model(recurrent, implementation="reference", **options)
    reference.set_weights(fast_model.get_weights())
    return fast_model, reference


@pytest.mark.parametrize("recurrent", ["tkan", "lstm"])
def test_model_forms_agree_in_inference_eager_and_traced(recurrent, monkeypatch):
    import tensorflow as tf
    from lem_model_testutils import ALLOC_TOL, XLA_ALLOC_TOL, random_inputs
    fast_model, reference = _both_forms(recurrent)
    calls = spy(monkeypatch, "embed_and_select", spy(monkeypatch, "allocate"))
    p = (fast_model.n_ahead + 1) * 8
    for batch in (1, fast_model.xla_max_batch + 3):  # traced: XLA-compiled (padded), then plain
        x = random_inputs(batch, seed=batch, scale=1.5, max_rate=0.5)
        want = np.asarray(reference(x))
        assert not calls  # "reference" computes the definitions
        assert np.abs(want - 1.0 / fast_model.n_ahead).max() > 1e-3  # the allocations move off TWAP
        np.testing.assert_allclose(np.asarray(fast_model(x)), want, **ALLOC_TOL)
        assert calls == ["embed_and_select", "allocate"]
        calls.clear()
        traced = tf.function(lambda v: fast_model(v, training=False))(x).numpy()
        np.testing.assert_allclose(traced, want, **XLA_ALLOC_TOL)
        scenario = np.arange(batch) * 7 % p
        want_s = np.asarray(reference.allocate_scenario(x, scenario))
        np.testing.assert_allclose(want_s, want.reshape(batch, fast_model.n_ahead, p)[np.arange(batch), :, scenario],
                                   **ALLOC_TOL)
        np.testing.assert_allclose(np.asarray(fast_model.allocate_scenario(x, scenario)), want_s, **ALLOC_TOL)
        calls.clear()
    with pytest.raises(AssertionError):  # the comparison can fail: another model's weights
        np.testing.assert_allclose(np.asarray(_both_forms(recurrent)[1](x)) * 1.01, want, **ALLOC_TOL)


@pytest.mark.parametrize("recurrent", ["tkan", "lstm"])
def test_model_forms_agree_in_a_traced_training_step(recurrent):
    """The training graph with every kernel (the TKAN's hand-written backward too) against the definitions: same
    loss and gradients."""
    import tensorflow as tf
    from lem_model.loss import LEMLoss
    from lem_model_testutils import random_inputs, random_labels
    fast_model, reference = _both_forms(recurrent)
    batch = 19
    x = {k: tf.constant(v) for k, v in random_inputs(batch, seed=9, scale=1.5, max_rate=0.5).items()}
    y = tf.constant(random_labels(batch, n_ahead=fast_model.n_ahead, seed=2))
    loss = LEMLoss()

    def step(model):
        @tf.function
        def run(x, y):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            return value, tape.gradient(value, model.trainable_weights)
        value, grads = run(x, y)
        return [value] + list(grads)

    got, want = step(fast_model), step(reference)
    names = ["loss"] + [v.path for v in reference.trainable_weights]
    _assert_same(want, got, names, scale=MODEL_GRAD_TOL)
    w_out = next(v for v in reference.trainable_weights if v.path.endswith("w_out"))
    w_out.assign(w_out * 1.001)  # the comparison can fail: a model 0.1 % apart in one weight
    with pytest.raises(AssertionError):
        _assert_same(step(reference), got, names, scale=MODEL_GRAD_TOL)


def test_implementation_is_a_saved_option_and_checked():
    from lem_model import build_lem
    from lem_model.model import LargeExecutionModel
    from lem_model_testutils import TINY, random_inputs, tiny_model
    model = tiny_model("tkan", implementation="reference", xla_max_batch=0)
    config = model.get_config()
    assert config["implementation"] == "reference" and config["xla_max_batch"] == 0
    again = LargeExecutionModel.from_config(config)
    assert (again.implementation, again.xla_max_batch) == ("reference", 0)
    assert {layer.implementation for layer in (again.vsn, again.recurrent_layer, again.recurrent_gate,
                                               again.attention, again.context_grn, again.allocator)} == {"reference"}
    assert build_lem(**TINY).implementation == "auto"
    with pytest.raises(ValueError, match="implementation"):
        build_lem(implementation="quick", **TINY)
    with pytest.raises(ValueError, match="xla_max_batch"):
        build_lem(xla_max_batch=-1, **TINY)
    # the kernels decline dropout in training: "fast" refuses, "auto" computes the definitions
    x = random_inputs(4, seed=1)
    with pytest.raises(ValueError, match="dropout"):
        tiny_model("tkan", implementation="fast", dropout=0.1)(x, training=True)
    assert np.isfinite(np.asarray(tiny_model("tkan", dropout=0.1)(x, training=True))).all()


# --- under JAX: the same comparison in a JAX process (Keras picks its backend at import) -----------------------

JAX_FORMS = """
import json, sys
import numpy as np, keras, jax
assert keras.backend.backend() == "jax"
from lem_model import kernels
from lem_model.loss import LEMLoss
from lem_model_testutils import random_inputs, random_labels, tiny_model
recurrent = sys.argv[1]
assert kernels.find("allocate") is not None and kernels.find("tkan") is None  # keras.ops kernels only
keras.utils.set_random_seed(0)  # the same weights in every run: the same computation, repeated
fast_model = tiny_model(recurrent, implementation="fast")
reference = tiny_model(recurrent, implementation="reference")
reference.set_weights(fast_model.get_weights())
x = random_inputs(9, seed=3, scale=1.5, max_rate=0.5)
y = random_labels(9, n_ahead=fast_model.n_ahead, seed=4)
loss = LEMLoss()

def value_and_grads(model):
    trainable = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]
    def f(trainable):
        out, _ = model.stateless_call(trainable, others, x, training=True)
        return loss(y, out), out
    (value, out), grads = jax.value_and_grad(f, has_aux=True)(trainable)
    return np.asarray(out), float(value), [np.asarray(g) for g in grads]

def rel_diff(grads_a, grads_b):  # the worst tensor's max difference, relative to that tensor's largest entry
    return max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-3)) for a, b in zip(grads_a, grads_b))

out_f, loss_f, grads_f = value_and_grads(fast_model)
out_r, loss_r, grads_r = value_and_grads(reference)
# the same measure between two models 0.1 % apart in one weight: what a real difference reads as
weights = reference.get_weights()
i = next(k for k, v in enumerate(reference.weights) if v.path.endswith("w_out"))
weights[i] = weights[i] * 1.001
reference.set_weights(weights)
_, _, grads_p = value_and_grads(reference)
report = {"out_max_diff": float(np.abs(out_f - out_r).max()), "out_off_twap": float(np.abs(out_r - 0.25).max()),
          "loss": [loss_f, loss_r], "n_grads": len(grads_r),
          "grad_rel_diff": rel_diff(grads_f, grads_r), "grad_rel_diff_perturbed": rel_diff(grads_p, grads_r),
          "zero_grads": sum(int(not np.abs(b).max() > 0) for b in grads_r)}
print("REPORT " + json.dumps(report))
"""


@pytest.mark.parametrize("recurrent", ["tkan", "lstm"])
def test_model_forms_agree_under_jax(recurrent):
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", JAX_FORMS, recurrent], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    report = json.loads([s for s in r.stdout.splitlines() if s.startswith("REPORT ")][-1][len("REPORT "):])
    assert report["out_off_twap"] > 1e-3, report        # allocations that depend on the inputs
    # two graphs of one function: float32 agreement (XLA's CPU kernels differ between AVX2 and AVX-512 machines)
    assert report["out_max_diff"] <= 1e-5, report
    assert abs(report["loss"][0] - report["loss"][1]) <= 1e-4 * abs(report["loss"][1]) + 1e-6, report
    assert report["n_grads"] > 20 and report["zero_grads"] == 0, report
    assert report["grad_rel_diff"] <= MODEL_GRAD_TOL, report
    assert report["grad_rel_diff_perturbed"] > MODEL_GRAD_TOL, report  # the measure can fail
