"""Serving the pushed LEM SavedModel: TF Serving configuration (README.md, models.config, k8s/), the gRPC
client and order logic (`client`, `scheduling`), and a development PredictionService server (`server`).

    from serving import LemClient, Order
    plan = LemClient("localhost:8500").plan(Order(side="buy", target="volume", size=1e4), bars)

`scheduling` is pure NumPy; `client`, `tensors` and `protos` need only grpcio, protobuf and NumPy (the thin
client: `protos` restates TF Serving's messages, no TensorFlow); `server` imports TensorFlow (loaded on first use)
and serves TF Serving's REST API (`rest`) and Prometheus metrics (`metrics`) on request; `blessing` reads the
marker `lems push --unblessed` writes into a version it pushes (no TensorFlow).
"""
_LAZY = {"LemClient": "serving.client", "ModelInfo": "serving.client", "Order": "serving.scheduling",
         "Schedule": "serving.scheduling", "DevServer": "serving.server"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
