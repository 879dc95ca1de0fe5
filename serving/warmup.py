"""TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`) for `serving/`: re-exported from
`components.trainer.warmup`, the one implementation, which the Trainer's export also writes with.

    write_warmup_file(export_dir, window_bars=468, n_ahead=12)
"""
from components.trainer.warmup import (SIGNATURES, WARMUP_FILE, read_warmup_requests, signature_inputs,  # noqa: F401
                                       warmup_batch_sizes, warmup_examples, warmup_inputs, warmup_requests,
                                       write_warmup_file)
