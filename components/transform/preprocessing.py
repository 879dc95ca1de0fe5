"""TFX Transform module: raw order-window examples -> model `bars` and `labels` (docs/example-contract.md).

`preprocessing_fn(inputs, custom_config)` calls the ONE feature builder `lem_model.features.build_features`
on the dense raw tensors. The sizes come from `custom_config` (`{"norm_window": W, "lookback": L,
"n_ahead": N}`, what `transform_custom_config(config)` builds from an `IngestionConfig`; the defaults are the
contract's 336/120/12). There are no full-pass statistics (no `tft.*` analyzers): every normaliser is a
statistic of the example's own bars, so train, eval, test and serving apply the same per-example graph.

Outputs: `bars` float32 `[B, L+N, F]` (rank 3: TFT accepts it and writes it as a fixed-shape feature),
`labels` float32 `[B, N, 2]`, and the passthrough `asset` (bytes `[B]`), `frequency_minutes`,
`origin_time` (int64 `[B]`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import tensorflow as tf

from lem_model.presets import PAPER_SIZES

DEFAULT_SIZES = dict(PAPER_SIZES)
PASSTHROUGH = ("asset", "frequency_minutes", "origin_time")


def transform_custom_config(config) -> dict:
    """`IngestionConfig` (or anything with the three sizes) -> the Transform component's `custom_config`."""
    return {"norm_window": int(config.norm_window), "lookback": int(config.lookback),
            "n_ahead": int(config.n_ahead)}


def _dense(x: tf.Tensor) -> tf.Tensor:
    return tf.sparse.to_dense(x) if isinstance(x, tf.SparseTensor) else x


def _scalar(x: tf.Tensor) -> tf.Tensor:
    x = _dense(x)
    return tf.reshape(x, [-1]) if x.shape.rank != 1 else x


def preprocessing_fn(inputs: Mapping[str, tf.Tensor], custom_config: Optional[Mapping[str, Any]] = None
                     ) -> dict:
    """Raw features -> {"bars", "labels", "asset", "frequency_minutes", "origin_time"} (see module doc)."""
    from lem_model.features import build_features  # keras import inside the traced function's module scope

    sizes = {**DEFAULT_SIZES, **{k: int(v) for k, v in dict(custom_config or {}).items() if k in DEFAULT_SIZES}}
    freq = _scalar(inputs["frequency_minutes"])
    out = build_features(_dense(inputs["volume"]), _dense(inputs["quote_volume"]), _dense(inputs["timestamp"]),
                         freq, **sizes)
    result = {"bars": out["bars"], "labels": out["labels"]}
    for name in PASSTHROUGH:
        result[name] = _scalar(inputs[name])
    return result
