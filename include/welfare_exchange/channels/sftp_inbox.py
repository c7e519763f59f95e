"""Answer what lands in a municipality's SFTP ``inbox/`` but is no request to take.

The arrival sensor takes complete request files; everything else used to lie there forever
without a word. Now each such file, once it stopped changing, is moved to ``quarantine/``,
the municipality gets a report in ``outbox/`` that says what to do, and the audit records
it — once, whatever the retries:

* ``too_large``: a request over the size limit (``WELFARE_EXCHANGE_INTAKE_MAX_FILE_BYTES``),
  judged on its listed size: never downloaded.
* ``hidden_file``: a name starting with ``.`` that is no known temporary upload name.
* ``not_a_request``: another extension than the request patterns (``.xlsx``, ``.xls``).
* ``abandoned_upload``: a temporary upload name (``.part``, WinSCP's ``.filepart``, ``~$…``
  lock files, …) unchanged for ``WELFARE_EXCHANGE_INBOX_STALE_UPLOAD_SECONDS`` (24 h): while
  it changes, or for less time, it is left alone — a client may still be writing it.

Reports and audit messages name a file by its handle (``#`` + 12 hex digits of the SHA-256
of its name), its size and its time, never by its name: a municipality's file name may hold
personal data.
"""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING

from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.protocols import get
from welfare_exchange.settings import get_timing
from welfare_exchange.transport import sftp

if TYPE_CHECKING:
    from welfare_exchange.transport.sftp import SFTPHook

log = logging.getLogger(__name__)

INBOX, OUTBOX, QUARANTINE = "inbox", "outbox", "quarantine"

#: Advice every refusal report on the SFTP channel ends with when a file may have been taken half-written.
UPLOAD_ADVICE = (
    "Upload het bestand onder een tijdelijke naam (bv. aanvraag.xlsx.part, of .filepart zoals WinSCP) en "
    "hernoem het pas als de upload klaar is: een bestand dat onder zijn eigen naam geschreven wordt en "
    "even stilvalt, kan half genomen worden.",
    "Upload the file under a temporary name (e.g. aanvraag.xlsx.part, or .filepart as WinSCP does) and "
    "rename it only when the upload is complete: a file written under its final name that pauses may be "
    "taken half-written.",
)

#: reason code → (what happened, what to do), Dutch then English lines of the report.
REASONS: dict[str, tuple[str, ...]] = {
    "too_large": (
        "Het bestand is groter dan deze dienst voor een aanvraag aanvaardt ({limit}); het werd niet "
        "gedownload en niet verwerkt. Controleer het bestand (enkel de kolom INSZ is nodig) en stuur het opnieuw.",
        "The file is larger than this service accepts for one request ({limit}); it was not downloaded and "
        "not processed. Check the file (only the INSZ column is needed) and send it again.",
    ),
    "hidden_file": (
        "Een bestand waarvan de naam met een punt begint, is verborgen en wordt nooit als aanvraag verwerkt. "
        "Stuur de aanvraag als zichtbaar Excel-bestand, bv. aanvraag.xlsx.",
        "A file whose name starts with '.' is hidden and is never processed as a request. Send the request "
        "as a visible Excel file, e.g. aanvraag.xlsx.",
    ),
    "not_a_request": (
        "Enkel Excel-werkmappen (.xlsx of .xls) in inbox/ worden als aanvraag verwerkt. Bewaar de lijst als "
        "Excel-werkmap met het afgesproken wachtwoord en upload ze opnieuw.",
        "Only Excel workbooks (.xlsx or .xls) in inbox/ are processed as requests. Save the list as an Excel "
        "workbook with the agreed password and upload it again.",
    ),
    "abandoned_upload": (
        "Een upload onder een tijdelijke naam (.part, .filepart, ...) is al {stale} niet meer veranderd en werd "
        "nooit hernoemd naar zijn eigen naam. Upload het bestand opnieuw en hernoem het als de upload klaar is.",
        "An upload under a temporary name (.part, .filepart, ...) has not changed for {stale} and was never "
        "renamed to its final name. Upload the file again and rename it when the upload is complete.",
    ),
}


def stale_upload_seconds() -> float:
    """How long a temporary upload may stay unchanged before it is reported (default 24 h)."""
    return get_timing().stale_upload


def reason_for(survey: sftp.InboxSurvey, f: sftp.RemoteFile) -> str:
    """The reason code of an unanswered file of ``survey``."""
    if f in survey.oversized:
        return "too_large"
    if f in survey.stale_uploads:
        return "abandoned_upload"
    return "hidden_file" if f.name.startswith(".") else "not_a_request"


def _when(mtime: int) -> str:
    return dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _megabytes(n: float) -> str:
    return f"{n / 1_048_576:.1f} MiB"


def report_text(protocol, f: sftp.RemoteFile, reason: str, *, max_bytes: int, stale_after: float) -> bytes:
    """The report put in the municipality's ``outbox/``: which file (by handle), why, what to do."""
    values = {"limit": _megabytes(max_bytes), "stale": f"{stale_after / 3600:g} h"}
    lines = [
        "Groeipakket - melding over een bestand in inbox/ / notice about a file in inbox/",
        "",
        f"Lokaal bestuur / local authority: {protocol.municipality} (NIS {protocol.nis_code})",
        f"Protocol: {protocol.id}",
        f"Bestand / file: {sftp.shown(f.name)} (referentie / reference), {f.size} bytes, "
        f"laatst gewijzigd / last changed {_when(f.mtime)}",
        f"Reden / reason: {reason}",
        "",
        *(text.format(**values) for text in REASONS[reason]),
        "",
        "Het bestand werd naar quarantaine verplaatst en wordt niet verwerkt.",
        "The file was moved to quarantine and will not be processed.",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def report_name(f: sftp.RemoteFile) -> str:
    """The report's file name: the agency's prefix and the file's handle, never its name."""
    return f"groeipakket_inbox-melding_{sftp.name_handle(f.name)[:12]}_{f.mtime}.txt"


def answer(
    protocol_id: int,
    survey: sftp.InboxSurvey,
    hook: SFTPHook,
    *,
    actor: audit.Actor,
    on: dt.date,
    max_bytes: int,
    stale_after: float,
) -> int:
    """Quarantine, report and audit every unanswered file of ``survey`` (each once); returns how many.

    Idempotent per file (its handle, size and mtime): a retry after a crash completes what an
    earlier try began; a file the municipality removed meanwhile is left at that; a file that
    comes back after it was answered is answered again.
    """
    answered = 0
    for f in survey.unanswered:
        if _answer_one(protocol_id, f, reason_for(survey, f), hook, actor=actor, on=on, max_bytes=max_bytes,
                       stale_after=stale_after):
            answered += 1
    return answered


def _answer_one(protocol_id: int, f: sftp.RemoteFile, reason: str, hook: SFTPHook, *, actor: audit.Actor,
                on: dt.date, max_bytes: int, stale_after: float) -> bool:
    with session_scope() as session:
        key, earlier = _occurrence(session, protocol_id, f)
        ledger.begin_side_effect(session, key, kind="inbox_answered", exchange_id=None, target=QUARANTINE)
        protocol = get(session, protocol_id)
    try:
        target = sftp.move(hook, f.path, QUARANTINE)
    except sftp.RemoteFileMissing:
        if earlier is None:  # removed by the municipality before it could be answered: nothing to say
            with session_scope() as session:
                ledger.complete_side_effect(session, key, detail={"vanished": True})
            log.info("%s left the inbox before it could be answered", sftp.shown(f.name))
            return False
        target = posixpath.join(QUARANTINE, f.name)  # moved by an earlier try that crashed before recording it
    name = report_name(f)
    digest, _ = sftp.upload_bytes(hook, report_text(protocol, f, reason, max_bytes=max_bytes, stale_after=stale_after),
                                  OUTBOX, name)
    with session_scope() as session:
        protocol = get(session, protocol_id)
        ledger.complete_side_effect(session, key, sha256=digest, detail={"remote": target, "report": name})
        rule = f"inbox notice: {protocol.request_retention_days} days (protocol {protocol.id})"
        deadline = on + dt.timedelta(days=protocol.request_retention_days)
        for kind, location in (("quarantine", target), ("report", posixpath.join(OUTBOX, name))):
            ledger.schedule_deletion(
                session, protocol_id=protocol.id, exchange_id=None, kind=kind, where="sftp",
                location=f"{protocol.channel_connection}:{location}", deadline=deadline, rule=rule,
                sha256=digest if kind == "report" else None,
            )
        audit.record(
            session, "request.quarantined" if reason == "too_large" else "inbox.quarantined", "refused",
            actor=actor, protocol=protocol, counts={"bytes": f.size},
            message=f"{reason}: file {sftp.shown(f.name)} ({f.size} bytes, last changed {_when(f.mtime)}) in the "
            f"municipality's inbox was not taken{' and not downloaded' if reason == 'too_large' else ''}; moved to "
            f"quarantine/, report {name} put in outbox/",
            fact_key=key,
        )
    log.info("%s (%s) moved to quarantine; report %s in outbox", sftp.shown(f.name), reason, name)
    return True


def _occurrence(session, protocol_id: int, f: sftp.RemoteFile):
    """The ledger key of this file's presence in the inbox, and its side effect if one was begun.

    Keyed on the file's handle, size and mtime, and numbered: a file answered before that is
    back (uploaded again with its timestamps kept) is a new occurrence, answered again — the
    sensor would otherwise wake up for it for ever.
    """
    base = f"inbox:p{protocol_id}:{sftp.name_handle(f.name)}:{f.size}:{f.mtime}:answered"
    for n in range(1, 1000):
        key = base if n == 1 else f"{base}:{n}"
        effect = ledger.find_side_effect(session, key)
        if effect is None or effect.state != "done":
            return key, effect
    raise RuntimeError(f"{sftp.shown(f.name)} was answered 1000 times: remove it from the inbox by hand")


def advice_for_refusal(code: str) -> Sequence[str]:
    """Extra report lines for a refused SFTP request: for a file that may have been taken half-written."""
    return UPLOAD_ADVICE if code in ("corrupt", "not_excel", "unsupported_encryption") else ()
