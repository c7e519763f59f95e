"""``welfare-exchange retention status|run``: what is due for deletion when; run a retention day by hand."""

from __future__ import annotations

import argparse
import datetime as dt
import json

from welfare_exchange import audit
from welfare_exchange.cliutil import iso_date
from welfare_exchange.db import session_scope
from welfare_exchange.retention import runner
from welfare_exchange.retention.status import render_text, retention_status


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("retention", help="retention deadlines and deletion runs")
    commands = parser.add_subparsers(dest="retention_command", required=True, metavar="ACTION")

    status = commands.add_parser("status", help="what is due for deletion when, per protocol")
    status.add_argument("--as-of", type=iso_date, help="the day to judge overdue items on (default: today)")
    status.add_argument("--json", action="store_true", help="machine-readable, with every pending item")
    status.set_defaults(handler=_status)

    run = commands.add_parser(
        "run",
        help="one retention run, as the daily DAG does it (protocol end, rules, deletions, audit pruning)",
    )
    run.add_argument("--as-of", type=iso_date, help="the run's date (default: today); deadlines on or before it are due")
    run.add_argument("--no-prune", action="store_true", help="leave the audit trail alone")
    run.set_defaults(handler=_run)


def _status(args: argparse.Namespace) -> int:
    as_of = args.as_of or dt.date.today()
    with session_scope() as session:
        status = retention_status(session, as_of)
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render_text(status))
    return 0


def _run(args: argparse.Namespace) -> int:
    # RetentionIncomplete is a WelfareExchangeError: the CLI prints it on one line, exit 2.
    outcome = runner.run(args.as_of or dt.date.today(), actor=audit.Actor.current_user(), prune=not args.no_prune)
    print(json.dumps(outcome, indent=2, sort_keys=True))
    return 0
