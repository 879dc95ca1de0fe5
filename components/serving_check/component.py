"""`ServingCheck`: the pre-push check between the Evaluator and the Pusher (TFX's InfraValidator role; that one
needs a `tensorflow_model_server` binary or Docker, which these machines lack).

Inputs: the Trainer's `model`, the ExampleGen's `examples` (the first `num_examples` of `split`, the split
the Evaluator used). Output: `blessing`, an `InfraBlessing` exactly as InfraValidator writes it (custom
property `blessed` 1/0 and an empty `INFRA_BLESSED` / `INFRA_NOT_BLESSED` file in its uri), which the stock
Pusher reads through its `infra_blessing` input: a failed check means "not pushed", with the reasons in
`<blessing uri>/serving_check.json` and in the log.
"""

import logging
import os

from tfx import v1 as tfx
from tfx.types import artifact_utils, standard_artifacts

BLESSED_KEY = "blessed"                      # what tfx.components.Pusher reads (model_utils.is_infra_validated)
BLESSED_FILE, NOT_BLESSED_FILE = "INFRA_BLESSED", "INFRA_NOT_BLESSED"
REPORT_FILE = "serving_check.json"
log = logging.getLogger("lems.serving_check")


def write_blessing(blessing_uri: str, result) -> bool:
    """Write the check's report and the blessing marker file under `blessing_uri`; True when blessed."""
    fileio = tfx.dsl.io.fileio
    if not fileio.exists(blessing_uri):
        fileio.makedirs(blessing_uri)
    with fileio.open(os.path.join(blessing_uri, REPORT_FILE), "w") as f:
        f.write(result.to_json())
    with fileio.open(os.path.join(blessing_uri, BLESSED_FILE if result.passed else NOT_BLESSED_FILE), "w") as f:
        f.write("")
    return result.passed


@tfx.dsl.components.component
def ServingCheck(  # pylint: disable=invalid-name
    model: tfx.dsl.components.InputArtifact[standard_artifacts.Model],
    examples: tfx.dsl.components.InputArtifact[standard_artifacts.Examples],
    blessing: tfx.dsl.components.OutputArtifact[standard_artifacts.InfraBlessing],
    split: tfx.dsl.components.Parameter[str] = "test",
    num_examples: tfx.dsl.components.Parameter[int] = 4,
) -> None:
    """Blesses the model when `check_serving_model` passes on it (see components.serving_check.check)."""
    from tfx.utils import path_utils

    from components.serving_check.check import CheckResult, check_serving_model, read_examples

    model_dir = path_utils.serving_model_path(model.uri)
    try:
        sample = read_examples(artifact_utils.get_split_uri([examples], split), num_examples)
        result = check_serving_model(model_dir, sample)
    except Exception as exc:  # noqa: BLE001 -- a check that cannot run blesses nothing, and says why
        result = CheckResult(failures=[f"the check could not run: {type(exc).__name__}: {exc}"],
                             details={"model_dir": model_dir})
    blessed = write_blessing(blessing.uri, result)
    blessing.set_int_custom_property(BLESSED_KEY, 1 if blessed else 0)
    if blessed:
        print(f"[serving-check] {model_dir}: passed ({result.details.get('warmup_requests')} warm-up requests, "
              f"{result.details.get('comparisons')} session/Python comparisons)", flush=True)
    else:
        log.error("serving check failed for %s; the Pusher will not push it:\n  %s", model_dir,
                  "\n  ".join(result.failures))
        print("[serving-check] NOT BLESSED (the Pusher will not push): " + "; ".join(result.failures), flush=True)
