"""What every Method 1 step shares, whatever the channel: the gate, the key, refusals, reports,
the result file's name.

Below both the channel modules (:mod:`.sftp`, :mod:`.smime`) and the channel-agnostic steps
(:mod:`welfare_exchange.exchange.steps`), so that both use it and neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from welfare_exchange import audit, connections, ledger
from welfare_exchange.db.models import Exchange, Protocol
from welfare_exchange.errors import InputError, ProtocolError
from welfare_exchange.protocols import check_gate, get
from welfare_exchange.untrusted import shown

REQUEST_CATEGORIES = ["INSZ kind"]
RESULT_CATEGORIES = ["INSZ kind", "INSZ begunstigde", "recht op sociale toeslag", "periode"]


class ExchangeRefused(InputError):
    """The request cannot be processed (quarantined; the municipality got a report)."""


def key_password(protocol: Protocol) -> str:
    """The file password agreed between the two DPOs: the password of the protocol's key connection."""
    try:
        connection = connections.get(protocol.key_connection)
    except Exception as exc:  # not defined, or its backend unreachable: say what to configure
        raise ProtocolError(
            f"the key connection {protocol.key_connection!r} of protocol {protocol.id} cannot be read "
            f"({type(exc).__name__}): create it in Airflow (Admin > Connections) or as "
            f"AIRFLOW_CONN_{protocol.key_connection.upper()}, with the agreed file password as its password",
            code="key_connection_missing",
        ) from None
    if not connection.password:
        raise ProtocolError(f"the key connection {protocol.key_connection!r} of protocol {protocol.id} has no password",
                            code="key_connection_missing")
    return connection.password


def result_file_name(protocol: Protocol, exchange: Exchange) -> str:
    """The result file's name on every channel, e.g. ``groeipakket_resultaat_44021_exchange-12_2026-11-28.xlsx``."""
    return f"groeipakket_resultaat_{protocol.nis_code}_exchange-{exchange.id}_{exchange.exchange_date.isoformat()}.xlsx"


def require_gate(protocol: Protocol, on: dt.date) -> None:
    """Raise :class:`ProtocolError` unless the protocol allows this exchange on ``on``."""
    decision = check_gate(protocol, on, kind="method1", channel=protocol.channel)
    if not decision.is_open:
        raise ProtocolError(f"protocol gate {decision.state}: {decision.reason}", code="protocol_closed")


def delivery_key(exchange_id: int) -> str:
    """The ledger key of an exchange's result delivery (the same on every channel)."""
    return f"exchange:{exchange_id}:delivered"


def delivered(session, exchange_id: int) -> bool:
    """Whether the ledger records the result as delivered — asked before any gate.

    A side effect already done is answered from the ledger: the gate guards only what has not
    happened yet, so a protocol revoked after the delivery neither blocks nor rewrites it.
    """
    return ledger.is_done(session, delivery_key(exchange_id))


def load_exchange(session, exchange_id: int) -> tuple[Exchange, Protocol]:
    """The exchange and its protocol, in ``session``."""
    exchange = ledger.get_exchange(session, exchange_id)
    return exchange, get(session, exchange.protocol_id)


def open_request_exchange(session, protocol: Protocol, *, digest: str, name: str, size: int, run, source: str):
    """Open (or find) the exchange of a received request: ``(exchange, duplicate_of)``.

    The exchange is keyed on the request's SHA-256. When another run already processed the
    same bytes, the request is a duplicate: that is audited (once per run) and ``duplicate_of``
    names the earlier exchange; the caller then processes nothing.

    :param source: how the request is named in the audit message, e.g. "request file 'x.xlsx'".
    """
    exchange, is_new = ledger.open_exchange(
        session, protocol, request_sha256=digest, request_name=name, request_size=size,
        dag_id=run.dag_id, run_id=run.run_id, exchange_date=run.exchange_date,
    )
    if is_new or exchange.run_id == run.run_id:
        return exchange, None
    audit.record(
        session, "request.duplicate", "duplicate", actor=run.actor, protocol=protocol, exchange_id=exchange.id,
        file_hashes={"request": digest}, counts={"bytes": size},
        message=f"{source} has the same SHA-256 as exchange {exchange.id} (run {exchange.run_id}); "
        "it is not processed again",
        fact_key=f"duplicate:{protocol.id}:{digest}:{run.run_id}",
    )
    return exchange, exchange.id


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def result_deadline(protocol: Protocol, exchange: Exchange) -> dt.date:
    return ledger.result_deadline(protocol, exchange.exchange_date)[0]


def request_deadline(protocol: Protocol, exchange: Exchange) -> dt.date:
    """When the request (and its copies on the channel) must be gone."""
    if protocol.delete_request_after_match:  # "delete the request as soon as matching is done"
        return exchange.exchange_date
    return ledger.request_deadline(protocol, exchange.exchange_date)[0]


def report_text(protocol: Protocol, exchange: Exchange, err: InputError, *, file_name: bool = True) -> bytes:
    """The validation report sent back to the municipality: codes and instructions, no personal data."""
    lines: list[Any] = [
        "Groeipakket - validatierapport / validation report",
        "",
        f"Lokaal bestuur / local authority: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id}",
        f"Uitwisseling / exchange: {exchange.id}",
    ]
    if file_name:  # the name the municipality gave it may hold personal data: its handle, and the SHA-256 below
        lines.append(f"Bestand / file: {shown(exchange.request_name)}")
    lines += [
        f"SHA-256: {exchange.request_sha256}",
        f"Datum / date: {exchange.exchange_date.isoformat()}",
        "",
        "Het bestand kon niet verwerkt worden / the file could not be processed:",
        f"  reden / reason: {err.code}",
        f"  {err}",
        "",
        "Het bestand werd in quarantaine geplaatst en wordt niet verwerkt. Corrigeer het en stuur het opnieuw.",
        "The file was quarantined and will not be processed. Correct it and send it again.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
