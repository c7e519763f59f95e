"""``welfare-exchange validate-request``: check a municipality's request file by hand.

Exit 0 when the file can be processed (even with invalid rows), exit 2 with one line on
stderr when it cannot. The password comes from a file or an environment variable, never from
the command line, where other users of the machine could read it in the process list.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib

from welfare_exchange.errors import InputError
from welfare_exchange.intake.reader import IntakeLimits, read_request


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate-request`` to the ``welfare-exchange`` CLI."""
    parser = subparsers.add_parser(
        "validate-request",
        help="decrypt and validate a municipality's request file; print counts, never numbers",
        description=__doc__,
    )
    parser.add_argument("file", metavar="FILE", type=pathlib.Path, help="the request file as received")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--password-file", type=pathlib.Path, help="file holding the password (one line)")
    secret.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    parser.add_argument(
        "--as-of",
        type=_date,
        default=None,
        help="exchange date for the age window, YYYY-MM-DD (default: today)",
    )
    parser.add_argument("--min-age", type=int, default=0, help="youngest age of the protocol's window")
    parser.add_argument("--max-age", type=int, default=25, help="oldest age of the protocol's window")
    parser.add_argument(
        "--allow-unencrypted",
        action="store_true",
        help="accept a file without password protection (the protocol normally forbids it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.set_defaults(handler=validate_request)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD") from exc


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is not None:
        try:
            text = args.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError("cannot read the password file: check its path and permissions") from exc
        # Editors add a final newline; a password never ends with one.
        return text.rstrip("\r\n")
    if args.password_env is not None:
        value = os.environ.get(args.password_env)
        if value is None:
            raise InputError("the environment variable named by --password-env is not set")
        return value
    return None


def validate_request(args: argparse.Namespace) -> int:
    """Handler of ``validate-request``: prints the report; IntakeError becomes exit 2."""
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise InputError("cannot read the request file: check its path and permissions") from exc
    password = _password(args)
    result = read_request(
        data,
        password,
        as_of=args.as_of or dt.date.today(),
        age_window=(args.min_age, args.max_age),
        limits=IntakeLimits.from_env(),
        require_encryption=not args.allow_unencrypted,
    )
    report = result.report
    if args.json:
        print(json.dumps(report.summary(), ensure_ascii=False))
        return 0
    summary = report.summary()
    print("request file can be processed")
    print(f"  sheet: {summary['sheet']}   column: {summary['column']}   encryption: {summary['encryption']}")
    print(f"  rows: {summary['rows']}   valid: {summary['valid']}   duplicates: {summary['duplicates']}")
    for label, count, rows in report.to_rows(limit=200):  # a terminal line, not a sheet
        print(f"  {label}: {count} (rows {rows})")
    return 0
