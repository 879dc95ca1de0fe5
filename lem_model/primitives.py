"""Small functions of the LEM that a layer's definition (`lem_model.layers`) and its kernels
(`lem_model.kernels`) both compute with, so that neither holds a copy: the allocator's constraints (paper eq. 25-27),
its bounded output rate, and the attention's causal mask. Backend-agnostic (`keras.ops`, NumPy)."""
from __future__ import annotations

import numpy as np
from keras import ops


def soft_clip(x, upper, sharpness):
    """Differentiable upper clip (paper eq. 25): x * s + u * (1 - s), s = sigmoid(sharpness * (u - x)).

    ~x for x << u, ~u for x >> u; exceeds u by at most `soft_clip_tolerance(sharpness)`.
    """
    s = ops.sigmoid(sharpness * (upper - x))
    return x * s + upper * (1.0 - s)


def soft_clip_tolerance(sharpness: float) -> float:
    """max_x S(x, u, sharpness) - u = max_d d * sigmoid(-sharpness * d) = 0.27846... / sharpness."""
    return 0.2784645427610738 / sharpness


def constrain_step(raw, remaining, min_rate, max_rate, k: int, n_steps: int, sharpness: float):
    """Eq. 26-27 for step k of n_steps: the MLP's raw output >= 0, the order's remaining fraction and the rates
    (all broadcastable to one shape) -> the allocation a_k:
        temp = soft_clip(raw + min_rate, max_rate)                 (eq. 26)
        a_k  = clip(max(temp, R_k - (N-1-k) * max_rate), 0, R_k)   (eq. 27 + a feasibility floor: the rest
                                                                     must fit under max_rate)."""
    temp = soft_clip(raw + min_rate, max_rate, sharpness)
    floor = remaining - float(n_steps - 1 - k) * max_rate
    return ops.minimum(ops.maximum(ops.maximum(temp, floor), 0.0), remaining)


def step_rate(tilt, bias, tilt_bound: float):
    """A step's rate before the constraints from the output layer's per-order term `tilt` and its bias:
    softplus(bias + tilt), or with tilt_bound c > 0 softplus(bias + c tanh(tilt / c))
    (`lem_model.layers.StepwiseFusedAllocator`)."""
    if tilt_bound > 0:
        tilt = tilt_bound * ops.tanh(tilt / tilt_bound)
    return ops.softplus(tilt + bias)


def causal_mask(num_queries: int, length: int) -> np.ndarray:
    """bool [Q, T]: query i (at position T - Q + i) may attend to positions <= T - Q + i."""
    return np.arange(length)[None, :] <= (length - num_queries + np.arange(num_queries))[:, None]
