"""``welfare-exchange subject-access`` and ``subject-erase``: data subjects' rights from the command line.

The person is given as a file of INSZ numbers (one per line), never as an argument, and is
never echoed: the output names the line of the file instead.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from welfare_exchange import audit, insz
from welfare_exchange.db import session_scope
from welfare_exchange.errors import InputError
from welfare_exchange.subjects import access, erasure
from welfare_exchange.subjects.persons import read_insz_file


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "subject-access", help="which exchanges included a person's data (right of access, art. 15 GDPR)"
    )
    parser.add_argument("--insz-file", required=True, type=pathlib.Path, metavar="F",
                        help="file with the person's INSZ number (one per line; several persons allowed)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_access)

    parser = subparsers.add_parser(
        "subject-erase",
        help="erase or rectify a person's data where this system still holds it; says what cannot be erased and why",
    )
    parser.add_argument("--insz-file", required=True, type=pathlib.Path, metavar="F",
                        help="file with the person's INSZ number (one per line)")
    parser.add_argument("--reason", required=True,
                        help="legal ground or case reference of the request (recorded in the audit; no names)")
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(handler=_erase)


def _access(args: argparse.Namespace) -> int:
    numbers = read_insz_file(args.insz_file)
    with session_scope() as session:
        reports = access.subject_access(session, numbers, actor=audit.Actor.current_user())
    if args.json:
        print(json.dumps({"persons": [r.as_dict() for r in reports]}, indent=2, sort_keys=True))
    else:
        print(access.render_text(reports))
    return 0


def _erase(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise InputError("--reason is empty: give the legal ground or the case reference of the request")
    if insz.find_insz_shaped(reason):
        raise InputError("--reason may not contain an INSZ number: give the numbers in --insz-file only")
    numbers = read_insz_file(args.insz_file)
    with session_scope() as session:
        report = erasure.erase_subject(session, numbers, reason, actor=audit.Actor.current_user())
    print(json.dumps(report.as_dict(), indent=2, sort_keys=True) if args.json else erasure.render_text(report))
    return 0
