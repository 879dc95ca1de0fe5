"""FLOPs of one training step of our model, for train_throughput's share of the matmul peak (project venv only).

The model's own forward pass in training mode, its loss and the gradients (`tf.GradientTape`) are traced into
one `tf.function` at the benchmark batch's shapes; every live op of that graph and of the functions it calls is
counted. A while loop's body (the recurrent time loop, its gradient loop) counts times its trip count, a
conditional its larger branch; dead code (Keras' shape-probing RNN step) is pruned, as at run time.
  - Matrix products exactly from static shapes: MatMul and BatchMatMul* 2*batch*M*N*K, Einsum 2 * the product of
    all index sizes.
  - Other ops through TensorFlow's registered "flops" statistic (1 per element); transcendental ops without one
    (Exp, Tanh, ...) and the optimizer update are not counted.
So the count is a slight lower bound, dominated by the exact matmul term (99 % of it at the paper config). It is
the graph that runs (the TKAN's hand-written backward included): 631.5 MFLOP per sample at the paper config on
2026-12-02, where TensorFlow differentiating everything counted 632.6.
"""
import math

_MATMUL = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
_WHILE = {"While", "StatelessWhile"}
_CALL = {"PartitionedCall", "StatefulPartitionedCall"}
_IF = {"If", "StatelessIf"}
_FREE = {"Const", "Identity", "Reshape", "Shape", "NoOp", "ReadVariableOp", "Placeholder"}


def _product_flops(op):
    """FLOPs of one matrix product, or None when a shape is not static (or an einsum uses an ellipsis)."""
    try:
        shapes = [t.shape.as_list() for t in op.inputs]
    except ValueError:
        return None
    if any(None in s for s in shapes):
        return None
    if op.type == "Einsum":
        terms = op.get_attr("equation").decode().split("->")[0].split(",")
        if "." in "".join(terms):
            return None
        sizes = {i: d for term, shape in zip(terms, shapes) for i, d in zip(term, shape)}
        return (2 if len(terms) == 2 else 1) * math.prod(sizes.values())
    (a, b), flags = shapes[:2], ("transpose_a", "transpose_b") if op.type == "MatMul" else ("adj_x", "adj_y")
    ta, tb = (bool(op.get_attr(f)) for f in flags)
    m, k = (a[-1], a[-2]) if ta else (a[-2], a[-1])
    n = b[-2] if tb else b[-1]
    ba, bb = a[:-2][::-1], b[:-2][::-1]
    batch = math.prod(max(ba[i] if i < len(ba) else 1, bb[i] if i < len(bb) else 1)
                      for i in range(max(len(ba), len(bb))))
    return 2 * batch * m * n * k


def _registered_flops(op):
    from tensorflow.python.framework import ops as tf_ops  # the statistic has no public API
    try:
        return tf_ops.get_stats_for_node_def(op.graph, op.node_def, "flops").value
    except Exception:  # noqa: BLE001 - unregistered op or unknown shape
        return None


def _trip_count(op):
    """Static trip count of a while op: its maximum_iterations, Keras RNN's reduce_max(input_length), or (gradient
    loops) the forward loop's, followed back through identities; None when unknown."""
    import numpy as np
    import tensorflow as tf
    t = op.inputs[1]
    v = tf.get_static_value(t)
    if v is None and t.op.type in ("Max", "Min"):
        inner = tf.get_static_value(t.op.inputs[0])
        v = None if inner is None else (np.max(inner) if t.op.type == "Max" else np.min(inner))
    if v is not None and v >= 0:
        return int(v)
    for _ in range(20):
        p = t.op
        if p.type in _WHILE:
            v = tf.get_static_value(p.inputs[1])
            return int(v) if v is not None and v >= 0 else None
        if p.type not in ("Identity", "IdentityN", "StopGradient") or not p.inputs:
            return None
        t = p.inputs[t.value_index if p.type == "IdentityN" else 0]
    return None


def _live_ops(graph):
    """The ops the graph's outputs depend on, in graph order."""
    roots = [t.op for t in getattr(graph, "outputs", [])] + list(getattr(graph, "control_outputs", []))
    if not roots:
        return graph.get_operations()
    live, stack = set(), list(roots)
    while stack:
        op = stack.pop()
        if op not in live:
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return [op for op in graph.get_operations() if op in live]


def graph_flops(graph, mult: int = 1) -> dict:
    """{"matmul", "other", "unknown_trip_loops"} of a traced graph (see the module docstring)."""
    out = {"matmul": 0, "other": 0, "unknown_trip_loops": 0}

    def add(sub):
        for k in out:
            out[k] += sub[k]

    for op in _live_ops(graph):
        if op.type in _WHILE:
            trips = _trip_count(op)
            out["unknown_trip_loops"] += trips is None
            add(graph_flops(graph._get_function(op.get_attr("body").name).graph, mult * (trips or 1)))
        elif op.type in _CALL:
            add(graph_flops(graph._get_function(op.get_attr("f").name).graph, mult))
        elif op.type in _IF:
            add(max((graph_flops(graph._get_function(op.get_attr(b).name).graph, mult)
                     for b in ("then_branch", "else_branch")), key=lambda c: c["matmul"] + c["other"]))
        elif op.type in _MATMUL:
            out["matmul"] += (_product_flops(op) or 0) * mult
        elif op.type not in _FREE:
            out["other"] += (_registered_flops(op) or 0) * mult
    return out


def train_step_flops(model, x, y) -> dict:
    """FLOPs per sample of forward + loss + backward of `model` on the batch (x, y)."""
    import tensorflow as tf

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.loss(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    c = graph_flops(step.get_concrete_function(x, y).graph)
    batch = int(y.shape[0])
    return {"train_flops_per_sample": (c["matmul"] + c["other"]) / batch,
            "train_matmul_flops_per_sample": c["matmul"] / batch, "unknown_trip_loops": c["unknown_trip_loops"]}
