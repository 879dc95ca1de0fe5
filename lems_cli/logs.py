"""Quiet by default: what `lems` does to third-party logs before TensorFlow is imported (`lems --verbose ...`
leaves them all as the libraries and the environment set them).

Quiet means: TensorFlow's C++ logs off (`TF_CPP_MIN_LOG_LEVEL=3`: the "Unable to register cuDNN/cuFFT/cuBLAS
factory" lines of a CPU machine, oneDNN and CPU-feature notices, `OUT_OF_RANGE: End of sequence` at the end of
each tf.data pass; errors still reach Python as exceptions), gRPC's C core at ERROR, third-party Python
loggers (absl, TensorFlow, Beam, TFX libraries, ...) at ERROR, and the google.api_core Python-version
FutureWarning and other third-party FutureWarnings/DeprecationWarnings ignored, as is Keras's "Your input ran
out of data" at the end of each pass over a finite split. A variable already set in the
environment (e.g. `TF_CPP_MIN_LOG_LEVEL=0 lems run ...`) is kept. The project's own output (`[demo]`,
`[pipeline]`, `[trainer]` lines, `lems`/`lems_cli`/`backfill`/`serving`/`kubeflow` loggers at INFO) is
unaffected.
"""
from __future__ import annotations

import logging
import os
import warnings

#: Environment read by native code at import: TensorFlow/XLA C++ logging and gRPC's C core.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}

#: Third-party Python loggers set to ERROR when quiet.
THIRD_PARTY_LOGGERS = ("absl", "tensorflow", "tensorflow_transform", "tensorflow_model_analysis",
                       "tensorflow_data_validation", "tfx_bsl", "tfx", "ml_metadata", "apache_beam", "keras",
                       "h5py", "matplotlib", "google", "googleapiclient", "urllib3", "jax")

#: The project's loggers shown from INFO in both modes (progress of serving, backfills, compiles).
PROJECT_LOGGERS = ("lems_cli", "serving", "backfill", "kubeflow", "lems")

#: Modules whose FutureWarning / DeprecationWarning are ignored when quiet (regular expressions, `warnings`).
THIRD_PARTY_WARNING_MODULES = (r"google\.", r"tensorflow", r"tfx", r"apache_beam", r"keras", r"tf_keras",
                               r"tensorflow_transform", r"tensorflow_model_analysis", r"tfx_bsl", r"absl",
                               r"ml_metadata", r"kfp", r"pandas", r"numpy", r"jax")


def setup(verbose: bool = False) -> dict:
    """Configure logging for one `lems` command; call before TensorFlow is imported.

    Returns what was set: {"env": {name: value}, "loggers": {name: level}, "warning_filters": n}.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    done: dict = {"env": {}, "loggers": {}, "warning_filters": 0}
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        return done
    for name, value in QUIET_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            done["env"][name] = value
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
        done["loggers"][name] = logging.ERROR
    try:  # absl's own verbosity (TFX logs through absl); absl is a TensorFlow dependency
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    for module in THIRD_PARTY_WARNING_MODULES:
        for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=module)
            done["warning_filters"] += 1
    # Keras 3 at the end of each pass over a finite tf.data split (the Trainer's datasets are one pass each)
    warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning, module=r"keras")
    done["warning_filters"] += 1
    return done
