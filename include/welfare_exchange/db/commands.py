"""``welfare-exchange db upgrade``: bring the project database schema up to date."""

from __future__ import annotations

import argparse

from welfare_exchange.db.engine import upgrade


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("db", help="project database schema")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = commands.add_parser("upgrade", help="apply the migrations (idempotent)")
    up.set_defaults(handler=_upgrade)


def _upgrade(args: argparse.Namespace) -> int:
    upgrade()
    return 0
