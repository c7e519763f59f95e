"""Small helpers shared by the CLI command modules: argument types and secret input."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib

from welfare_exchange.errors import InputError


def iso_date(text: str) -> dt.date:
    """argparse type: an ISO date (YYYY-MM-DD)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def add_password_arguments(parser: argparse.ArgumentParser, what: str = "file password") -> None:
    """``--password-file F`` or ``--password-env VAR``: a password never goes on the command line."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--password-file", type=pathlib.Path, metavar="F", help=f"file holding the {what}")
    group.add_argument("--password-env", metavar="VAR", help=f"environment variable holding the {what}")


def read_password(args: argparse.Namespace) -> str:
    """The password named by ``--password-file`` or ``--password-env``, without its trailing newline."""
    if getattr(args, "password_file", None) is not None:
        try:
            value = args.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise InputError(f"cannot read the password file {args.password_file}: {exc.strerror}") from None
    else:
        value = os.environ.get(args.password_env or "")
        if value is None:
            raise InputError(f"environment variable {args.password_env} is not set")
    if not value:
        raise InputError("the password is empty")
    return value
