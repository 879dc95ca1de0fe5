"""Fast kernels of the LEM's blocks, per Keras backend: the pattern of Keras' LSTM, whose one `call` asks
`backend.lstm` for a fused kernel and computes its own definition when that raises `NotImplementedError`.

A block (`lem_model.layers`, `lem_model.recurrent`) is written once, in its `call`; before computing it, the
call asks `run(name, implementation, *tensors)`. A kernel is a function of tensors (inputs and the block's
weights, never the layer): it computes the same function as the definition with fewer or larger operations,
or raises `NotImplementedError` for a call it cannot compute (dropout in training), and the block falls back
to its definition. Kernel modules register their functions with `register`; they import nothing from the
model's modules but `lem_model.primitives`. Tests hold every kernel equal to its block's definition in values
and gradients (tests/test_model_kernels.py).

The switch is the model's saved `implementation` option, passed to every block:
  - "reference": never a kernel: the definitions, to read and to check against;
  - "auto" (default): a block's kernel where one is registered for the running backend and takes the call;
  - "fast": as "auto", but a registered kernel that declines is an error (as Keras' `use_cudnn=True`).

Registered: `generic` (every backend, `keras.ops`) and, under TensorFlow, `tensorflow_kernels`; both are imported
with this package, for the backend Keras runs.
"""
from __future__ import annotations

import importlib

import keras

#: Kernel modules imported for each backend; later modules override earlier registrations.
MODULES = {"tensorflow": ("lem_model.kernels.generic", "lem_model.kernels.tensorflow_kernels")}
DEFAULT_MODULES = ("lem_model.kernels.generic",)
#: Every Keras backend, for kernels written in `keras.ops`.
ALL_BACKENDS = ("tensorflow", "jax", "torch", "numpy")

_KERNELS: dict = {}      # (name, backend) -> function


def register(name: str, backends=ALL_BACKENDS):
    """Decorator: the function is the kernel `name` under each of `backends`."""
    def add(fn):
        for backend in backends:
            _KERNELS[(name, backend)] = fn
        return fn
    return add


def find(name: str):
    """The kernel `name` registered for the running backend, or None."""
    return _KERNELS.get((name, keras.backend.backend()))


def run(name: str, implementation: str, *args, **kwargs):
    """The kernel `name` applied to the arguments, or None when the block computes its definition instead:
    implementation "reference", no kernel for the running backend, or the kernel declined (raised
    NotImplementedError, which under implementation "fast" is a ValueError)."""
    if implementation == "reference":
        return None
    kernel = find(name)
    if kernel is None:
        return None
    try:
        return kernel(*args, **kwargs)
    except NotImplementedError as e:
        if implementation == "fast":
            raise ValueError(f"implementation='fast': the {name!r} kernel cannot compute this call ({e}); "
                             "use implementation='auto' (its definition then) or 'reference'") from e
        return None


for _module in MODULES.get(keras.backend.backend(), DEFAULT_MODULES):
    importlib.import_module(_module)
