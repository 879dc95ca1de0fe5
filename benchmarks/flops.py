"""FLOP count of one traced training step and a per-block time profile of OUR model (project venv only).

FLOP count (method: static count on the traced TensorFlow graph, not an analytic formula): the forward pass, the
loss and the gradients (`tf.GradientTape`) are traced into one `tf.function` with the benchmark batch's fixed
shapes; every op of that graph and of the functions it calls is visited (while-loop bodies, e.g. the
recurrent layer's time loop and its gradient loop, are multiplied by their trip count):
  - matrix products counted exactly from static shapes: MatMul (2*M*N*K), BatchMatMul* (2*batch*M*N*K),
    Einsum (2 * product of all index sizes, two operands);
  - other ops with a TensorFlow flops statistic (element-wise Add/Mul/Sub/RealDiv/..., Sum/Mean, Softmax, ...)
    through `tf.compat.v1` `ops.get_stats_for_node_def` (1 FLOP per element);
  - transcendental element-wise ops without a registered statistic (Exp, Tanh, Sigmoid, ...) are NOT counted,
    nor the optimizer update (O(parameters) per batch, reported separately as an estimate).
So the count is a lower bound dominated by the exact matmul term. It is the model's count: TensorFlow
differentiates everything (`lem_model.fast.call(..., tkan_backward="autodiff")`); the graph that actually runs, with the TKAN's hand-written backward, is counted too (`executed_graph_flops_per_sample`).
"""
import collections
import re
import time

_MATMUL_OPS = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
_WHILE_OPS = {"While", "StatelessWhile"}
_CALL_OPS = {"PartitionedCall", "StatefulPartitionedCall"}
_IF_OPS = {"If", "StatelessIf"}


def _dims(t):
    try:
        return t.shape.as_list()
    except ValueError:
        return None


def _matmul_key(op):
    """(type, operand shapes, transpose/adjoint flags or equation): what fixes a matrix product's cost; None
    when a shape is not static (or an einsum uses ellipses)."""
    shapes = [_dims(t) for t in op.inputs]
    if any(s is None or None in s for s in shapes):
        return None
    if op.type == "Einsum":
        flags = (op.get_attr("equation").decode(),)
        if "." in flags[0]:
            return None
    elif op.type == "MatMul":
        flags = (bool(op.get_attr("transpose_a")), bool(op.get_attr("transpose_b")))
    else:
        flags = (bool(op.get_attr("adj_x")), bool(op.get_attr("adj_y")))
    return (op.type, tuple(tuple(s) for s in shapes), flags)


def _key_flops(key):
    """FLOPs of one product given its `_matmul_key`: 2*batch*M*N*K (einsum: 2 * product of all index sizes for
    two operands)."""
    kind, shapes, flags = key
    if kind == "Einsum":
        lhs = flags[0].split("->")[0].split(",")
        sizes = {}
        for term, shape in zip(lhs, shapes):
            sizes.update(zip(term, shape))
        n = 1
        for v in sizes.values():
            n *= v
        return 2 * n if len(lhs) == 2 else n
    a, b = shapes[:2]
    ta, tb = flags
    m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
    n = b[-2] if tb else b[-1]
    rank = max(len(a), len(b)) - 2
    batch = 1
    for u, v in zip([1] * (rank - len(a) + 2) + list(a[:-2]), [1] * (rank - len(b) + 2) + list(b[:-2])):
        batch *= max(u, v)
    return 2 * batch * m * n * k


def _registered_flops(op):
    from tensorflow.python.framework import ops as tf_ops
    try:
        stats = tf_ops.get_stats_for_node_def(op.graph, op.node_def, "flops")
        return stats.value
    except Exception:  # unregistered op or unknown shape
        return None


def _trip_count(op, graph_fn_lookup):
    """Static trip count of a while op: its maximum_iterations input, or (gradient loops) the forward loop's."""
    import numpy as np
    import tensorflow as tf
    t = op.inputs[1]
    v = tf.get_static_value(t)
    if v is None and t.op.type in ("Max", "Min"):  # Keras RNN: reduce_max(input_length)
        inner = tf.get_static_value(t.op.inputs[0])
        v = None if inner is None else (np.max(inner) if t.op.type == "Max" else np.min(inner))
    if v is not None and v >= 0:
        return int(v)
    seen = 0
    while seen < 20:  # follow identities / passthroughs back to a forward while op
        seen += 1
        p = t.op
        if p.type in _WHILE_OPS:
            v = tf.get_static_value(p.inputs[1])
            return int(v) if v is not None and v >= 0 else None
        if p.type in ("Identity", "IdentityN", "StopGradient") and p.inputs:
            t = p.inputs[t.value_index if p.type == "IdentityN" else 0]
            continue
        return None
    return None


class FlopCounter:
    def __init_plain(self):
        self.by_type = collections.Counter()
        self.by_scope = collections.Counter()
        self.matmul_flops = 0
        self.other_flops = 0
        self.uncounted_types = collections.Counter()
        self.unknown_trip_loops = 0
        self.matmuls = collections.Counter()  # _matmul_key -> executions per step

    def __init__(self, model_name=None):
        self.__init_plain()
        self.model_name = model_name

    def merge(self, other):
        self.by_type.update(other.by_type)
        self.by_scope.update(other.by_scope)
        self.uncounted_types.update(other.uncounted_types)
        self.matmuls.update(other.matmuls)
        self.matmul_flops += other.matmul_flops
        self.other_flops += other.other_flops
        self.unknown_trip_loops += other.unknown_trip_loops

    def _scope(self, name):
        """Top-level layer of the model an op belongs to (gradient ops included), e.g. 'recurrent'."""
        parts = [re.sub(r"_\d+$", "", p) for p in name.split("/")]
        parts = [p for p in parts if p and not p.startswith("while") and p not in
                 ("gradients", "gradient_tape", "StatefulPartitionedCall", "PartitionedCall")]
        if self.model_name and self.model_name in parts:
            i = parts.index(self.model_name)
            return parts[i + 1] if i + 1 < len(parts) - 1 else "(model glue)"
        return "(outside model: loss, gradient sums)"

    @staticmethod
    def _live_ops(graph):
        """Ops the graph's outputs depend on (dead code, e.g. Keras' shape-probing RNN step, is pruned at run
        time and must not be counted)."""
        roots = [t.op for t in getattr(graph, "outputs", [])] + list(getattr(graph, "control_outputs", []))
        if not roots:
            return graph.get_operations()
        live, stack = set(), list(roots)
        while stack:
            op = stack.pop()
            if op in live:
                continue
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
        return [op for op in graph.get_operations() if op in live]

    def walk(self, graph, mult=1, prefix=""):
        for op in self._live_ops(graph):
            if op.type in _WHILE_OPS:
                trips = _trip_count(op, None)
                if trips is None:
                    self.unknown_trip_loops += 1
                    trips = 1
                body = graph._get_function(op.get_attr("body").name)
                self.walk(body.graph, mult * trips, prefix + op.name + "/")
                continue
            if op.type in _CALL_OPS:
                self.walk(graph._get_function(op.get_attr("f").name).graph, mult, prefix + op.name + "/")
                continue
            if op.type in _IF_OPS:  # count the larger branch only
                subs = []
                for br in ("then_branch", "else_branch"):
                    sub = FlopCounter(self.model_name)
                    sub.walk(graph._get_function(op.get_attr(br).name).graph, mult, prefix + op.name + "/")
                    subs.append(sub)
                self.merge(max(subs, key=lambda c: c.matmul_flops + c.other_flops))
                continue
            if op.type in _MATMUL_OPS:
                key = _matmul_key(op)
                if key is None:
                    self.uncounted_types[op.type + "(unknown shape)"] += mult
                    continue
                f = _key_flops(key)
                self.matmul_flops += f * mult
                self.matmuls[key] += mult
            else:
                f = _registered_flops(op)
                if f is None:
                    if op.outputs and op.type not in ("Const", "Identity", "Reshape", "Shape", "NoOp",
                                                      "ReadVariableOp", "Placeholder"):
                        self.uncounted_types[op.type] += mult
                    continue
                self.other_flops += f * mult
            self.by_type[op.type] += f * mult
            self.by_scope[self._scope(prefix + op.name)] += f * mult


def _train_step_function(model, tkan_backward: str = "hand_written"):
    """tf.function (x, y) -> (loss, gradients of the trainable variables): the traced training step of the
    model's fast form; tkan_backward "autodiff": TensorFlow differentiates the TKAN loop itself."""
    import tensorflow as tf
    from lem_model import fast

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            pred = fast.call(model, x, training=True, tkan_backward=tkan_backward)
            loss = model.loss(y, pred)
        return loss, tape.gradient(loss, model.trainable_variables)

    return step


def count_train_step_flops(model, x, y) -> dict:
    """FLOPs of forward + loss + backward for the batch (x, y) (see module docstring); per sample too."""
    import tensorflow as tf
    batch = int(y.shape[0])
    t0 = time.perf_counter()
    # The model's FLOPs: TensorFlow differentiates everything itself (the hand-written TKAN backward of
    # lem_model.fast_tf recomputes a few small terms; its graph is counted separately as "executed").
    counter = FlopCounter(model.name)
    counter.walk(_train_step_function(model, tkan_backward="autodiff").get_concrete_function(x, y).graph)
    executed = FlopCounter(model.name)
    executed.walk(_train_step_function(model).get_concrete_function(x, y).graph)
    fwd_graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(x).graph
    fwd = FlopCounter(model.name)
    fwd.walk(fwd_graph)
    total = counter.matmul_flops + counter.other_flops
    params = int(model.count_params())
    return {
        "flops_method": "static count on traced fwd+loss+grad graph, automatic differentiation throughout "
                        "(matmul/einsum exact; registered element-wise ops 1/elem; transcendentals and "
                        "optimizer not counted)",
        "train_flops_per_sample": total / batch,
        "train_matmul_flops_per_sample": counter.matmul_flops / batch,
        "executed_graph_flops_per_sample": (executed.matmul_flops + executed.other_flops) / batch,
        "forward_flops_per_sample": (fwd.matmul_flops + fwd.other_flops) / batch,
        "adam_flops_per_sample_estimate": 12.0 * params / batch,
        "flops_by_scope_per_sample": {k: v / batch for k, v in counter.by_scope.most_common(12)},
        "flops_by_type_per_sample": {k: v / batch for k, v in counter.by_type.most_common(8)},
        "uncounted_op_types": dict(counter.uncounted_types.most_common(10)),
        "unknown_trip_loops": counter.unknown_trip_loops,
        "flops_count_s": time.perf_counter() - t0,
    }


def matmul_floor(model, x, y, min_time_s: float = 0.05, max_copies: int = 64) -> dict:
    """A training step's matrix products timed alone: every matmul of the executed
    training graph (the one `train_on_batch` runs: hand-written TKAN backward, loop bodies times their trip
    counts) is timed in isolation at its own shapes and flags, on the same threads, and the times are summed.

    Each distinct product runs in a `tf.function` of `copies` independent instances (one shared random left
    operand, a distinct right one each; copies chosen so one call does >= ~min_time_s of work; the fastest of
    3 calls counts), so per-op dispatch is included once per product as in the real graph. Products inside
    the XLA-compiled TKAN forward are timed as TensorFlow (oneDNN) products. Everything else (element-wise
    work, reductions, copies, the optimizer) is excluded. An estimate of the products' share of a step, not a
    strict bound: each right operand here is cold in cache, while in the step a product often reads a tensor
    just written (e.g. the allocator's first-layer weight gradient, [214, 256] x [10400, 256]^T: 11.0 ms alone
    here, 6.0-7.6 ms by oneDNN's own timing inside the step), and with more inter-op threads products can
    overlap. Returns the floor (s per step), the matmul FLOPs behind it and the heaviest products.
    """
    step = _train_step_function(model)
    counter = FlopCounter(model.name)
    counter.walk(step.get_concrete_function(x, y).graph)
    rows, total_s, total_flops, t0 = [], 0.0, 0.0, time.perf_counter()
    for key, count in counter.matmuls.items():
        kind, shapes, flags = key
        flops = _key_flops(key)
        one = _time_product(kind, shapes, flags, flops, min_time_s, max_copies)
        rows.append({"op": kind, "shapes": [list(s) for s in shapes], "flags": list(flags), "per_step": count,
                     "ms_each": 1e3 * one, "ms_per_step": 1e3 * one * count, "gflops": flops / one / 1e9})
        total_s += one * count
        total_flops += flops * count
    rows.sort(key=lambda r: -r["ms_per_step"])
    return {"matmul_floor_s": total_s, "matmul_floor_flops": total_flops, "matmul_floor_products": len(rows),
            "matmul_floor_executions": int(sum(counter.matmuls.values())), "matmul_floor_top": rows[:15],
            "matmul_floor_time_s": time.perf_counter() - t0}


def _time_product(kind, shapes, flags, flops, min_time_s, max_copies):
    """Seconds for one execution of the product (see matmul_floor)."""
    import tensorflow as tf
    copies = int(max(1, min(max_copies, min_time_s * 150e9 / max(flops, 1))))
    a = tf.random.normal(shapes[0])
    bs = [tf.Variable(tf.random.normal(shapes[1])) for _ in range(copies)]  # distinct: grappler cannot merge them

    def product(b):
        if kind == "Einsum":
            return tf.einsum(flags[0], a, b)
        if kind == "MatMul":
            return tf.matmul(a, b, transpose_a=flags[0], transpose_b=flags[1])
        return tf.linalg.matmul(a, b, adjoint_a=flags[0], adjoint_b=flags[1])

    @tf.function
    def run():  # independent products; one element of each kept so none is pruned
        return tf.add_n([tf.reshape(product(b), [-1])[:1] for b in bs])

    run().numpy()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run().numpy()
        best = min(best, time.perf_counter() - t)
    return best / copies


def _layer_fwd_bwd(layer, args, kwargs, tensors):
    """tf.function: forward of `layer` on the captured call arguments + gradient of the sum of its outputs
    w.r.t. its weights and its tensor inputs."""
    import tensorflow as tf

    @tf.function
    def fb():
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            out = layer(*args, **kwargs)
            s = tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(out)])
        return tape.gradient(s, layer.trainable_variables + tensors)
    return fb


def block_profile(model, x, y, reps: int = 3) -> list:
    """Time forward+backward of each direct sub-layer of `model` on the inputs it receives in a real forward
    pass (captured by wrapping `call`); rows sorted by time: (layer, ms per batch, share of the full step)."""
    import tensorflow as tf
    captured = {}
    layers = [l for l in model._flatten_layers(include_self=False, recursive=False)]
    originals = {}
    for layer in layers:
        originals[layer] = layer.call

        def wrapped(*args, __layer=layer, **kwargs):
            captured.setdefault(__layer.name, (args, kwargs))
            return originals[__layer](*args, **kwargs)
        layer.call = wrapped
    try:
        model(x, training=True)
    finally:
        for layer in layers:
            layer.call = originals[layer]

    def timed(fn, *args):
        fn(*args)  # trace + warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
        return (time.perf_counter() - t0) / reps * 1e3

    @tf.function
    def full(x, y):
        with tf.GradientTape() as tape:
            loss = model.loss(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    full_ms = timed(full, x, y)
    rows = []
    for layer in layers:
        if layer.name not in captured:
            continue
        args, kwargs = captured[layer.name]
        tensors = [a for a in tf.nest.flatten(args) if isinstance(a, (tf.Tensor, tf.Variable))]

        fb = _layer_fwd_bwd(layer, args, kwargs, tensors)
        try:
            ms = timed(fb)
        except Exception as e:  # a layer that cannot be replayed alone
            rows.append((layer.name, float("nan"), f"not replayable: {type(e).__name__}: {str(e)[:80]}"))
            continue
        rows.append((layer.name, ms, ms / full_ms))
    rows.sort(key=lambda r: -(r[1] if r[1] == r[1] else -1))
    return [("FULL train step (fwd+loss+grad, no optimizer)", full_ms, 1.0)] + rows
