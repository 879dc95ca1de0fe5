"""How long the Trainer's input iterator takes to be deleted at the end of each pass, with tf.data autotuning on
and off (diagnosis for issue 21's "the Trainer used about one core"; benchmarks/HISTORY.md, session 14).

It builds the Trainer's own input (`components.trainer.module.input_fn`, the same TFXIO source, batch, shuffle
and map) over a finished run's transformed examples, iterates each pass with a consumer that takes
`--consumer-seconds` per batch (a training step's time, so that the pass lasts as long as an epoch), then deletes
the iterator and prints how long that took. With autotuning on, TF 2.16's tf.data model thread makes some
deletions wait tens of seconds with the process idle.

    .venv/bin/python benchmarks/input_stall.py --pipeline-root runs/reproduce-crypto/pipeline_root \\
        --autotune on --epochs 7 --consumer-seconds 0.25
"""
from __future__ import annotations

import argparse
import gc
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Accessor:
    """The part of TFX's DataAccessor that `input_fn` uses, over TFExampleRecord files."""

    def __init__(self, schema):
        self.schema = schema

    def tf_dataset_factory(self, files, options, schema):
        from tfx_bsl.public import tfxio
        return tfxio.TFExampleRecord(files, schema=schema).TensorFlowDataset(options)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-root", required=True, help="a finished run's pipeline root (has Transform/)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--autotune", choices=("on", "off"), default="off",
                        help="off: the Trainer's input as it is; on: with tf.data autotuning (the former input)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--consumer-seconds", type=float, default=0.25, help="seconds the consumer takes per batch")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)

    import tensorflow as tf
    import tensorflow_transform as tft
    from components.trainer import module
    graphs = sorted(glob.glob(os.path.join(args.pipeline_root, "Transform", "transform_graph", "*")))
    files = sorted(glob.glob(os.path.join(args.pipeline_root, "Transform", "transformed_examples", "*",
                                          f"Split-{args.split}", "*")))
    if not graphs or not files:
        parser.error(f"no transform graph or {args.split} examples under {args.pipeline_root}/Transform")
    tto = tft.TFTransformOutput(graphs[-1])
    ds = module.input_fn(files, _Accessor(tto.transformed_metadata.schema), tto, batch_size=args.batch_size,
                         constraints=[(0.0, 1.0)], shuffle=args.split == "train", seed=0)
    if args.autotune == "on":
        options = tf.data.Options()
        options.autotune.enabled = True
        ds = ds.with_options(options)
    print(f"[input_stall] {len(files)} files, autotune {args.autotune} "
          f"({ds.options().autotune.enabled}), consumer {args.consumer_seconds} s per batch", flush=True)
    for epoch in range(args.epochs):
        t0 = time.time()
        iterator, n = iter(ds), 0
        for _ in iterator:
            n += 1
            time.sleep(args.consumer_seconds)
        t1 = time.time()
        del iterator, _
        gc.collect()
        t2 = time.time()
        print(f"[input_stall] autotune {args.autotune} epoch {epoch}: {n} batches in {t1 - t0:.1f} s; "
              f"iterator deleted in {t2 - t1:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
