"""``welfare-exchange audit verify|anchor|export``: prove the trail intact, anchor its head, export the register."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from welfare_exchange import audit
from welfare_exchange.audit import anchors, integrity
from welfare_exchange.audit.authentication import AnchorAuthError
from welfare_exchange.audit.trail import write_csv
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("audit", help="the audit trail (processing register)")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    store_help = "the anchor store (default: WELFARE_EXCHANGE_AUDIT_ANCHOR_FILE or var/audit-anchors.jsonl)"
    verify = commands.add_parser(
        "verify",
        help="exit 0 when the hash chain is intact and agrees with its authenticated anchors, 1 naming the first break",
    )
    verify.add_argument("--anchors", type=pathlib.Path, metavar="FILE", help=store_help)
    verify.set_defaults(handler=_verify)
    anchor = commands.add_parser(
        "anchor", help="verify the trail, then append its head to the anchor store, time-stamped and/or signed (as retention_daily does)"
    )
    anchor.add_argument("--anchors", type=pathlib.Path, metavar="FILE", help=store_help)
    anchor.set_defaults(handler=_anchor)
    export = commands.add_parser("export", help="the processing register (verwerkingsregister) view")
    export.add_argument("--since", type=iso_date, help="only records from this date (YYYY-MM-DD)")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.set_defaults(handler=_export)


def _verify(args: argparse.Namespace) -> int:
    with session_scope() as session:
        report = integrity.check(session, args.anchors)
    if report.ok:
        print(f"audit chain intact: {report.chain.checked} records verified; {report.anchors.anchors} anchor(s) agree")
    elif report.broken_id is not None:
        print(f"audit chain BROKEN at record {report.broken_id}: {report.reason}")
    else:
        print(f"audit chain BROKEN against its anchors: {report.reason} (the chain itself is consistent: {report.chain.checked} records)")
    print("checked:")
    for line in report.checked_lines():
        print(f"  {line}")
    if not report.ok:
        print(f"runbook: {anchors.RUNBOOK_STEP}")
    return 0 if report.ok else 1


def _anchor(args: argparse.Namespace) -> int:
    try:
        out = anchors.anchor_head(actor=audit.Actor.current_user(), path=args.anchors)
    except (anchors.AnchoringRefused, AnchorAuthError) as err:
        print(f"no anchor written: {err}", file=sys.stderr)
        return 1
    if out.get("sequence") is None:
        print(f"no anchor written: {out['reason']}")
    else:
        print(f"anchor {out['sequence']}: record {out['last_id']}, authenticated by {' and '.join(out['methods'])}")
    return 0


def _export(args: argparse.Namespace) -> int:
    with session_scope() as session:
        rows = audit.export_rows(session, since=args.since)
        if args.format == "jsonl":
            for row in rows:
                sys.stdout.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        else:
            write_csv(rows, sys.stdout)
    return 0
