"""``welfare-exchange exchange retry ID``: retry a failed exchange, as the Exchanges view's button does.

It logs in to Airflow's REST API as an operator — the ``airflow_api`` connection (type http:
host = the API's URL, login, password; ``WELFARE_EXCHANGE_AIRFLOW_API_CONN_ID``), or
``--api-url``, ``--user`` and ``--password-file``/``--password-env`` — so Airflow checks that
this user may clear tasks, and the audit names that user.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from welfare_exchange.cliutil import read_password
from welfare_exchange.errors import InputError
from welfare_exchange.orchestration import airflow_api
from welfare_exchange.ui import retry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("exchange", help="act on an exchange through Airflow (retry)")
    commands = parser.add_subparsers(dest="exchange_command", required=True, metavar="ACTION")
    retry_ = commands.add_parser(
        "retry", help="clear the failed tasks of an exchange and their downstream, so Airflow runs them again"
    )
    retry_.add_argument("exchange_id", type=int, metavar="ID", help="the exchange's id (Exchanges view, audit export)")
    retry_.add_argument("--api-url", metavar="URL", help="Airflow's API, e.g. http://127.0.0.1:8080 (default: the connection's host)")
    retry_.add_argument("--user", metavar="NAME", help="an Airflow user allowed to clear tasks (default: the connection's login)")
    secret = retry_.add_mutually_exclusive_group()
    secret.add_argument("--password-file", type=pathlib.Path, metavar="F", help="file holding that user's password")
    secret.add_argument("--password-env", metavar="VAR", help="environment variable holding that user's password")
    retry_.set_defaults(handler=_retry)


def _retry(args: argparse.Namespace) -> int:
    password = read_password(args) if (args.password_file or args.password_env) else None
    try:
        api = airflow_api.for_cli(args.api_url, args.user, password)
    except airflow_api.AirflowApiError as err:
        raise InputError(str(err)) from None
    with api:
        outcome = retry.retry(api, operator=api.username or "unknown", via="the CLI", exchange_id=args.exchange_id)
    print(outcome.message, file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if outcome.ok else 2
