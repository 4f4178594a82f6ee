"""User-facing errors: one clear paragraph and a non-zero exit instead of a long trace."""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


class UserError(Exception):
    """An error the user can fix (bad input file, config key, missing weights...).

    The message must name the culprit: the file, the row or the config key.
    """


class ConfigError(UserError):
    """A config key is unknown, or its value has the wrong type or is out of range."""


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
        _exit_interrupted()
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


# Set by the SIGINT handler of run_cli. Lightning catches the KeyboardInterrupt of a Ctrl-C inside
# fit/test itself, shuts down and calls sys.exit(1); this flag tells that exit from a crash.
_interrupted = False


def _note_interrupt(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as without this handler


def _exit_interrupted() -> None:
    print("\ninterrupted", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def run_cli(main: Callable[[], Any], before: Callable[[], None] | None = None) -> None:
    """Run a Hydra entry point with the suite's exit codes: 2 for a user error, 130 for Ctrl-C.

    ``before`` runs ahead of Hydra (checks of the command line that Hydra would report with exit 1).
    The Ctrl-C code holds for single runs and multiruns alike, also when Lightning has already
    turned the interrupt into ``sys.exit(1)``.
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _note_interrupt)
    try:
        if before is not None:
            before()
        main()
    except UserError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        _exit_interrupted()
    except SystemExit as exit_:
        if _interrupted and exit_.code not in (0, None, EXIT_INTERRUPTED):
            _exit_interrupted()
        raise
