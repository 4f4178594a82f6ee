"""User-facing errors: one clear paragraph and a non-zero exit instead of a long trace."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


class UserError(Exception):
    """An error the user can fix (bad input file, config key, missing weights...).

    The message must name the culprit: the file, the row or the config key.
    """


class ConfigError(UserError):
    """A config key is unknown or has a value of the wrong type."""


class DataError(UserError):
    """An input file is missing, unreadable or inconsistent."""


def run_guarded(fn: Callable[..., Any], *args: Any, log_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """Call ``fn``; user errors end the process with a short message and exit code 2.

    Unexpected exceptions keep their traceback in ``<log_dir>/error.log`` and print a
    one-paragraph summary (exit code 1), so a user does not have to read a 200-line trace.
    """
    try:
        return fn(*args, **kwargs)
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - last-resort reporting for the CLI
        trace = traceback.format_exc()
        where = ""
        if log_dir is not None:
            try:
                from suite.io import atomic_write_text

                path = atomic_write_text(Path(log_dir) / "error.log", trace)
                where = f" The full traceback is in {path}."
            except OSError:
                where = ""
        print(
            f"\nerror: the run failed with {type(err).__name__}: {err}.{where} "
            "If this looks like a bug rather than a problem with the data or config, "
            "report it with that file.",
            file=sys.stderr,
        )
        sys.exit(EXIT_INTERNAL_ERROR)
