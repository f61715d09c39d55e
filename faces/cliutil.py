"""Small helpers shared by every subcommand's `main(argv)`: exit codes and error reporting."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from swapstream.faces.errors import InputError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so `main(argv)` can be called from tests."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise InputError(message)


def run_cli(body: Callable[[], int], prog: str) -> int:
    """Run a subcommand body and map exceptions to exit codes with a one-line reason on stderr."""
    try:
        return body()
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0)


def read_secret_file(path: str, flag: str) -> str:
    """The first line of a secret file given on the command line (a token, a key), stripped; a
    file keeps the secret out of the process list. InputError for an unreadable or empty file."""
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise InputError(f"cannot read {flag} {path}: {why}") from None
    if not secret:
        raise InputError(f"{flag} {path} is empty")
    return secret
