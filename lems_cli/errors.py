"""User errors of the `lems` commands: one line `error: ...` on stderr and exit status 2, no traceback (with
`--verbose` the traceback is printed first, then the same line). `lems_cli.main` does the printing.

A configuration error is one of them: `load_config` reads, overrides and validates a pipeline config and turns
what `pipeline.configs` raises (the message names the file, the field and what is allowed) into a `CliError`.
"""
from __future__ import annotations

from typing import Iterable, Optional

#: Exit status of a usage or configuration error (argparse's for a bad command line, too).
USAGE_ERROR = 2


class CliError(Exception):
    """An error the user fixes (bad config, missing file, wrong option): printed as one line, no traceback."""

    def __init__(self, message: str, code: int = USAGE_ERROR):
        super().__init__(message)
        self.message, self.code = message, int(code)


def one_line(text: str) -> str:
    """`text` on one line (inner line breaks become '; ')."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def load_config(path: str, overrides: Optional[Iterable[str]] = None, **replace):
    """`PipelineConfig.from_file(path)` with `--set` overrides and `replace(**replace)` applied, validated;
    a CliError naming the file and the field on anything wrong (before TensorFlow is imported)."""
    from pipeline.configs import PipelineConfig
    try:
        config = PipelineConfig.from_file(path)
        if overrides:
            config = config.with_overrides(list(overrides))
        if replace:
            config = config.replace(**replace)
        return config.validate()
    except FileNotFoundError as e:
        raise CliError(f"{e}") from e
    except (TypeError, ValueError) as e:
        message = one_line(e)
        raise CliError(message if message.startswith(f"{path}:") else f"{path}: {message}") from e
