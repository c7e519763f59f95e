"""``welfare-exchange audit verify|export``: prove the trail intact; export the processing register."""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys

from welfare_exchange import audit
from welfare_exchange.audit import anchors
from welfare_exchange.audit.trail import EXPORT_COLUMNS
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="the audit trail (processing register)")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = commands.add_parser(
        "verify", help="exit 0 when the hash chain is intact and agrees with its anchors, 1 naming what is broken"
    )
    verify.add_argument(
        "--anchors", type=pathlib.Path, metavar="FILE",
        help="the anchor file written by retention_daily (default: WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE or var/audit-anchors.jsonl)",
    )
    verify.set_defaults(handler=_verify)
    export = commands.add_parser("export", help="the processing register (verwerkingsregister) view")
    export.add_argument("--since", type=iso_date, help="only records from this date (YYYY-MM-DD)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.set_defaults(handler=_export)


def _verify(args: argparse.Namespace) -> int:
    with session_scope() as session:
        result = audit.verify(session)
        anchored = anchors.check_anchors(session, args.anchors)
    if not result.ok:
        print(f"audit chain BROKEN at record {result.broken_id}: {result.reason} ({result.checked} records verified before it)")
        return 1
    if not anchored.ok:
        print(f"audit chain REWRITTEN: {anchored.mismatch} (the chain itself is consistent: {result.checked} records)")
        return 1
    print(
        f"audit chain intact: {result.checked} records verified; {anchored.checked} anchor(s) kept outside the "
        f"database agree" + (f" ({anchored.pruned} older than the pruned records)" if anchored.pruned else "")
    )
    return 0


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
