"""The operator CLI ``welfare-exchange``.

Each command group lives beside the logic it drives and registers itself here through a
``register(subparsers)`` function, so this module only assembles them and turns errors into
the CLI contract: a clear one-line message on stderr and exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from welfare_exchange import connections
from welfare_exchange.errors import InputError, WelfareExchangeError

#: Modules that contribute sub-commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "welfare_exchange.db.commands",
    "welfare_exchange.protocols.commands",
    "welfare_exchange.entitlements.commands",
    "welfare_exchange.audit.commands",
    "welfare_exchange.intake.commands",
    "welfare_exchange.exchange.commands",
    "welfare_exchange.outreach.commands",
    "welfare_exchange.referral.commands",
    "welfare_exchange.retention.commands",
    "welfare_exchange.subjects.commands",
    "welfare_exchange.ui.commands",
)


#: Raised by command handlers for bad operator input: one line on stderr, exit code 2.
UsageError = InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="welfare-exchange",
        description="Operate the Groeipakket welfare-data exchange with municipalities.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # group not built yet; siblings still work
                continue
            raise
        module.register(subparsers)
    return parser


class _AirflowHooksOnFirstUse:
    """The Airflow hooks as the CLI's connection source, Airflow imported only when a command
    first reads a connection (most commands read none, and start faster without it)."""

    def __getattr__(self, name: str):
        from welfare_exchange.orchestration.hooks import AirflowHooks

        hooks = AirflowHooks()
        connections.install(hooks)
        return getattr(hooks, name)


def main(argv: list[str] | None = None) -> int:
    connections.install(_AirflowHooksOnFirstUse())  # type: ignore[arg-type]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except WelfareExchangeError as exc:
        print(f"welfare-exchange: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("welfare-exchange: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
