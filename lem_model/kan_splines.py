"""The KAN sub-layer of the TKAN (`keras_efficient_kan.KANLinear`) in a flat layout, shared by both fast TKAN loops
(`lem_model.tkan_fast`'s scan, `lem_model.fast_tf`'s while loop): the B-spline bases (Cox-de Boor recursion) in a
[B, in * (knots - 1)] layout, features repeated by a 0/1 matmul, knot constants precomputed once per call as row
vectors (zero where a basis does not exist at that order, so groups never mix); the unused trailing bases meet
zero rows of the spline weight. Read from the layer's own (non-trainable) grid and weights."""
from __future__ import annotations

import numpy as np
from keras import ops


def kan_constants(kan):
    """Constants of the flat-layout B-splines (see module doc), from the KAN's (non-trainable) grid."""
    n_in, order = kan.in_features, kan.spline_order
    grid = ops.convert_to_tensor(kan.grid)[0]                              # [in, knots]
    m0 = int(grid.shape[-1]) - 1                                           # order-0 bases per feature
    n_final = m0 - order                                                   # = grid_size + spline_order
    repeat = np.kron(np.eye(n_in, dtype="float32"), np.ones((1, m0), "float32"))  # [in, in*m0]

    def flat(t):  # [in, m] -> [in*m0], zero-padded per feature
        return ops.reshape(ops.pad(t, [[0, 0], [0, m0 - int(t.shape[1])]]), (-1,))

    knots = []
    for k in range(1, order + 1):
        exists = np.tile((np.arange(m0) < m0 - k).astype("float32"), n_in)  # basis j exists at order k
        knots.append((flat(grid[:, :-(k + 1)]), flat(1.0 / (grid[:, k:-1] - grid[:, :-(k + 1)])) * exists,
                      flat(grid[:, k + 1:]), flat(1.0 / (grid[:, k + 1:] - grid[:, 1:-k])) * exists))
    keep = np.zeros((n_in * m0, n_in * n_final), "float32")               # flat basis -> spline_weight row
    for i in range(n_in):
        keep[i * m0 + np.arange(n_final), i * n_final + np.arange(n_final)] = 1.0
    lo0, hi0 = ops.reshape(grid[:, :-1], (-1,)), ops.reshape(grid[:, 1:], (-1,))
    return repeat, lo0, hi0, knots, keep


def spline_bases(a, repeat, lo0, hi0, knots, order=None):
    """Flat B-spline bases [N, in*m0] of a [N, in] (`kan_constants`); with order (the spline order), also
    their derivatives d basis / d (its feature of a), from the last recursion level's inputs."""
    xr = ops.matmul(a, repeat)                                             # [N, in*m0]
    bases = ops.cast(ops.logical_and(xr >= lo0, xr < hi0), a.dtype)
    for lo, inv_left, hi, inv_right in knots:
        prev, nxt = bases, ops.pad(bases[:, 1:], [[0, 0], [0, 1]])
        bases = (xr - lo) * inv_left * bases + (hi - xr) * inv_right * nxt
    if order is None:
        return bases
    return bases, order * (inv_left * prev - inv_right * nxt)


def kan_weight(kan, keep):
    """[in + in*m0, out]: base_weight over the spline_weight rows spread onto the flat basis layout."""
    return ops.concatenate([kan.base_weight, ops.matmul(keep, kan.spline_weight)], 0)
