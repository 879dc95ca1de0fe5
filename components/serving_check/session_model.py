"""A SavedModel loaded the way TF Serving's C++ server loads it: the MetaGraph tagged `serve` imported into
its own graph and `tf.compat.v1.Session` (`tf.compat.v1.saved_model.loader.load`: restore op, init op),
signatures run by their SignatureDef tensor names (`Session.run(fetches, feed_dict)`), no Python objects of
the SavedModel involved. Used by the pre-push check (`components.serving_check.check`) and by the development
server (`serving.server`), so development serving has production's semantics.

    model = SessionModel("runs/serving/lem/1")
    out = model.run("serving_default", {"volume": ..., ...})     # {"allocations": ndarray}
    model.close()                                                  # releases the graph, variables, XLA code
"""
from __future__ import annotations

import os
import threading
from typing import Optional

SERVE_TAG = "serve"


class SessionModel:
    """One SavedModel in a session. `run` is thread-safe (Session.run is); `close` releases the session."""

    def __init__(self, path: str, tags=(SERVE_TAG,), config=None):
        import tensorflow as tf

        self.path = path
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise FileNotFoundError(f"no saved_model.pb in {path}")
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        try:
            with self.graph.as_default():
                meta_graph = tf.compat.v1.saved_model.loader.load(self.session, list(tags), path)
        except Exception:
            self.session.close()
            raise
        self.signature_defs = {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
        if not self.signature_defs:
            self.session.close()
            raise ValueError(f"SavedModel {path} (tags {list(tags)}) has no serving SignatureDef")
        self._feeds = {k: {name: info.name for name, info in sd.inputs.items()}
                       for k, sd in self.signature_defs.items()}
        self._fetches = {k: {name: info.name for name, info in sd.outputs.items()}
                         for k, sd in self.signature_defs.items()}
        self._closed = False
        self._lock = threading.Lock()

    def run(self, signature: str, inputs: dict, outputs: Optional[list] = None) -> dict:
        """{output name: ndarray} of `signature` on `inputs` {input name: ndarray} (all outputs by default)."""
        if self._closed:
            raise RuntimeError(f"SessionModel {self.path} is closed")
        if signature not in self.signature_defs:
            raise KeyError(f"signature {signature!r} not in {sorted(self.signature_defs)}")
        feeds, fetches = self._feeds[signature], self._fetches[signature]
        unknown = sorted(set(inputs) - set(feeds))
        if unknown:
            raise KeyError(f"signature {signature!r} has no input(s) {unknown}; inputs {sorted(feeds)}")
        wanted = list(outputs) if outputs else sorted(fetches)
        return self.session.run({k: fetches[k] for k in wanted}, {feeds[k]: v for k, v in inputs.items()})

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self):
        with self._lock:
            if not self._closed:
                self._closed = True
                self.session.close()
                self.graph = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
