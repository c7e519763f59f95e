"""``welfare-exchange match``: a Method 1 dry run — the DAG's decrypt, validate, match and build
steps on a local request file, writing the encrypted result and delivering nothing.

It opens no exchange in the ledger (a later real exchange of the same file is not a
duplicate), but it is processing of personal data, so it is audited like the tasks are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import pathlib
import sys

from welfare_exchange import audit, ledger
from welfare_exchange.cliutil import add_password_arguments, iso_date, read_password
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.exchange import matching, result
from welfare_exchange.intake import IntakeLimits, encrypt_agile, read_request
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.staging import atomic_write


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "match", help="dry run of a Method 1 exchange on a local request file (delivers nothing)"
    )
    parser.add_argument("request", type=pathlib.Path, metavar="REQUEST", help="the municipality's encrypted Excel file")
    add_password_arguments(parser, "file password agreed between the DPOs")
    parser.add_argument("--protocol", type=int, required=True, metavar="ID")
    parser.add_argument("--out", type=pathlib.Path, required=True, metavar="RESULT.xlsx")
    parser.add_argument("--as-of", type=iso_date, help="exchange date (YYYY-MM-DD), default today")
    parser.set_defaults(handler=_match)


def _result_password(protocol, fallback: str) -> tuple[str, str]:
    """The protocol's key (its key connection's password) when it can be read, else the given one."""
    from welfare_exchange.exchange.steps import key_password

    try:
        return key_password(protocol), f"key connection {protocol.key_connection}"
    except ProtocolError:
        return fallback, "the password file (the key connection is not reachable from here)"


def _match(args: argparse.Namespace) -> int:
    password = read_password(args)
    try:
        data = args.request.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the request file {args.request}: {exc.strerror}") from None
    on = args.as_of or dt.date.today()
    actor = audit.Actor.current_user()
    with session_scope() as session:
        protocol = get(session, args.protocol)
        decision = check_gate(protocol, on, kind="method1")
        if not decision.is_open:
            raise ProtocolError(f"protocol gate {decision.state}: {decision.reason}")
        outcome = read_request(
            data, password, as_of=on, age_window=(protocol.age_min, protocol.age_max), limits=IntakeLimits.from_env()
        )
        rows = matching.match(
            session, outcome.valid, supplements=protocol.supplements, reference_date=protocol.reference_date,
            exchange_date=on,
        )
        sha = hashlib.sha256(data).hexdigest()
        draft = Exchange(id=0, protocol_id=protocol.id, request_sha256=sha, request_name=args.request.name, exchange_date=on)
        summary = outcome.report.summary()
        deadline, _ = ledger.result_deadline(protocol, on)
        plain = result.build_workbook(protocol, draft, rows, outcome.report.to_rows(), summary, deadline)
        key, source = _result_password(protocol, password)
        encrypted = encrypt_agile(plain, key)
        del plain
        atomic_write(args.out, encrypted)
        audit.record(
            session, "exchange.dry_run", actor=actor, protocol=protocol,
            data_categories=["INSZ kind", "INSZ begunstigde", "recht op sociale toeslag", "periode"],
            file_hashes={"request": sha, "result": hashlib.sha256(encrypted).hexdigest()},
            counts={"rows": summary["rows"], "valid": summary["valid"], "matched_rows": len(rows)},
            subjects={r.child_insz for r in rows} | {r.beneficiary_insz for r in rows},
            message=f"dry run by the operator CLI: result written locally ({args.out.name}), nothing delivered",
        )
    print(
        f"rows {summary['rows']}, valid {summary['valid']}, invalid {sum(summary['invalid'].values())}, "
        f"duplicates {summary['duplicates']}, matched rows {len(rows)} "
        f"({len({r.child_insz for r in rows})} children); result encrypted with {source}: {args.out}",
        file=sys.stdout,
    )
    return 0
