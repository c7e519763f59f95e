"""``welfare-exchange audit verify|export``: prove the trail intact; export the processing register."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from welfare_exchange import audit
from welfare_exchange.audit.trail import EXPORT_COLUMNS
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="the audit trail (processing register)")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = commands.add_parser("verify", help="exit 0 when the hash chain is intact, 1 naming the first broken record")
    verify.set_defaults(handler=_verify)
    export = commands.add_parser("export", help="the processing register (verwerkingsregister) view")
    export.add_argument("--since", type=iso_date, help="only records from this date (YYYY-MM-DD)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.set_defaults(handler=_export)


def _verify(args: argparse.Namespace) -> int:
    with session_scope() as session:
        result = audit.verify(session)
    if result.ok:
        print(f"audit chain intact: {result.checked} records verified")
        return 0
    print(f"audit chain BROKEN at record {result.broken_id}: {result.reason} ({result.checked} records verified before it)")
    return 1


def _export(args: argparse.Namespace) -> int:
    with session_scope() as session:
        rows = audit.export_rows(session, since=args.since)
        if args.format == "jsonl":
            for row in rows:
                sys.stdout.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        else:
            writer = csv.DictWriter(sys.stdout, fieldnames=EXPORT_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
    return 0
