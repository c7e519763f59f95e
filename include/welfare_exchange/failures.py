"""Why a task failed — its *cause* — defined once, with the runbook section that says what to do.

A failure is classified by what went wrong, not by the task it happened in: a missing key
connection in ``decrypt_and_validate`` points to *The key connection is missing or wrong*, not
to *A request was refused*. The failure callback records the cause in the ``task.failed``
audit fact (:func:`fact_message`), the alert carries it, and the Exchanges view reads it back
(:func:`parse_fact_message`).

Each :class:`Cause` also says whose move it is (:attr:`Cause.party`). Only a refusal the
*municipality* caused — its file or e-mail cannot be processed — may be answered with a
refusal report (:func:`refused_by_sender`); a failure on the agency's side (a key connection
missing, our server or database down, a worker out of memory) is the operator's to fix and is
never reported to the municipality as a refusal.

Pure Python: the classifier recognises foreign exceptions (paramiko, asyncssh, SQLAlchemy,
smtplib, …) by their class names and the modules on their traceback, so it imports none of
them and runs where the failure happened (the task's process) and in tests alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from welfare_exchange.errors import AgencySideError

RUNBOOK = "docs/RUNBOOK.md"

#: Who has to act on a cause.
AGENCY, MUNICIPALITY, PROTOCOL = "agency", "municipality", "protocol"


@dataclass(frozen=True)
class Cause:
    """One reason a task can fail.

    :param code: short, stable, machine-readable (in audit facts, alerts, the view).
    :param section: the heading in ``docs/RUNBOOK.md`` an operator reads.
    :param party: who has to act: ``agency`` (us), ``municipality`` (it sends a corrected
        file) or ``protocol`` (the protocol's owner: signature, suspension, revocation).
    :param summary: one line for the Exchanges view.
    """

    code: str
    section: str
    party: str
    summary: str

    @property
    def runbook(self) -> str:
        """The pointer alerts and audit facts carry: the runbook file, ``§`` and the quoted section."""
        return f"{RUNBOOK} § '{self.section}'"


_CAUSES = (
    Cause("key_connection_missing", "The key connection is missing or wrong", AGENCY,
          "the protocol's key connection (the file password) cannot be read or has no password"),
    Cause("wrong_password", "The password does not open the request", MUNICIPALITY,
          "the agreed file password does not open the request file"),
    Cause("request_refused", "A request was refused", MUNICIPALITY,
          "the municipality's file or e-mail cannot be processed; it was told why"),
    Cause("sftp_unreachable", "The SFTP server is unreachable", AGENCY,
          "the SFTP server could not be reached, refused the login or the host key"),
    Cause("mail_unreachable", "The mail server is unreachable", AGENCY,
          "the agency's IMAP or SMTP server could not be reached or refused the login"),
    Cause("agency_identity", "The agency's S/MIME identity is missing or wrong", AGENCY,
          "the agency's S/MIME certificate or key connection cannot be used"),
    Cause("protocol_closed", "The protocol gate failed", PROTOCOL,
          "the protocol is not signed, not valid on the exchange date, or does not allow this"),
    Cause("database_unreachable", "The project database is unreachable", AGENCY,
          "the project database (registry, ledger, audit) could not be reached"),
    Cause("staging_missing", "A staged file is missing or unreadable", AGENCY,
          "a file this exchange staged is gone or cannot be opened with the staging key"),
    Cause("out_of_memory", "The agency's machine ran out of memory", AGENCY,
          "the worker ran out of memory (reading the request, or another step)"),
    Cause("ledger_conflict", "Re-run a failed exchange safely", AGENCY,
          "the step contradicts what the exchange ledger records; nothing was changed"),
    Cause("anchoring_failed", "Anchoring the audit trail", AGENCY,
          "the audit trail's head could not be anchored (time-stamp, signature or anchor store)"),
    Cause("task_stopped", "Airflow stopped a task", AGENCY,
          "Airflow stopped the try (lost heartbeat, killed process, overloaded worker)"),
    Cause("unknown", "Re-run a failed exchange safely", AGENCY,
          "not recognised: read the task log"),
)

#: code → cause, for every cause there is.
CAUSES: dict[str, Cause] = {cause.code: cause for cause in _CAUSES}

#: Refusal codes of the request intake and of the S/MIME checks: the sender's file or message
#: itself cannot be processed (unless an agency-side error hides behind one: :func:`classify`).
SENDER_REFUSAL_CODES = frozenset({
    # welfare_exchange.intake.failures.CODES
    "wrong_password", "not_encrypted", "not_excel", "corrupt", "unsupported_encryption", "no_insz_column",
    "ambiguous_sheet", "too_large", "too_many_rows", "zip_bomb", "timeout", "empty",
    # welfare_exchange.transport.smime.SMIME_ERROR_CODES
    "unknown_sender", "unknown_certificate", "expired_certificate", "unsupported_cipher", "no_attachment",
    "several_attachments", "not_smime", "bad_signature", "decrypt_failed",
})
#: A task whose failure has one cause whatever the exception (a sensor failing as designed).
TASK_CAUSES = {"protocol_gate": "protocol_closed", "protocol_gate_before_delivery": "protocol_closed"}

#: The section a task's failure points to when its cause is not recognised.
TASK_SECTIONS = {
    "wait_for_request": "No request arrived",
    "anchor_audit_head": "Anchoring the audit trail",
    "wait_for_fresh_snapshot": "A structural feed is late",
    "deliver_feed": "A structural feed cannot be delivered",
    "summarise_feeds": "A structural feed cannot be delivered",
    "delete_due_items": "SFTP or e-mail is unreachable",
    "send_messages": "SFTP or e-mail is unreachable",
    "report_to_municipality": "SFTP or e-mail is unreachable",
    "reject_unknown_senders": "The mail server is unreachable",
}

# Foreign exception classes ("module.QualName" prefixes of a class in the exception's MRO) → cause.
_CLASS_CAUSES = (
    ("welfare_exchange.transport.sftp.", "sftp_unreachable"),
    ("welfare_exchange.transport.mail.", "mail_unreachable"),
    ("welfare_exchange.audit.anchors.", "anchoring_failed"),
    ("welfare_exchange.audit.authentication.", "anchoring_failed"),
    ("welfare_exchange.exchange_state.ExchangeStateError", "ledger_conflict"),
    ("paramiko.", "sftp_unreachable"),
    ("asyncssh.", "sftp_unreachable"),
    ("smtplib.", "mail_unreachable"),
    ("imaplib.", "mail_unreachable"),
    ("aiosmtplib.", "mail_unreachable"),
)
# Errors that mean the agency's database or machine failed, wherever in the chain they sit
# (a parser's "damaged file" wrapped around an out-of-memory error is not the file's fault).
_AGENCY_MARKERS = (
    ("builtins.MemoryError", "out_of_memory"),
    ("sqlalchemy.exc.OperationalError", "database_unreachable"),
    ("sqlalchemy.exc.InterfaceError", "database_unreachable"),
    ("sqlalchemy.exc.DisconnectionError", "database_unreachable"),
    ("sqlalchemy.exc.TimeoutError", "database_unreachable"),
    ("psycopg2.OperationalError", "database_unreachable"),
    ("psycopg.OperationalError", "database_unreachable"),
    ("sqlite3.OperationalError", "database_unreachable"),
)
# Modules on a network error's traceback that say which server it was.
_NETWORK_MODULES = (
    (("paramiko", "asyncssh", "welfare_exchange.transport.sftp", "airflow.providers.sftp", "airflow.providers.ssh"),
     "sftp_unreachable"),
    (("smtplib", "imaplib", "aiosmtplib", "welfare_exchange.transport.mail", "airflow.providers.smtp",
      "airflow.providers.imap"), "mail_unreachable"),
    (("sqlalchemy", "psycopg2", "psycopg"), "database_unreachable"),
)
_STAGING_MODULE = "welfare_exchange.staging"
_IDENTITY_FUNCTIONS = {"load_agency_identity", "agency_identity"}


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    todo = [error]
    while todo and len(seen) < 20:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def _class_names(error: BaseException) -> list[str]:
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in type(error).__mro__]


def _frames(error: BaseException) -> list[tuple[str, str]]:
    """``(module, function)`` of each frame on the exception's traceback, raise site last."""
    out = []
    tb = error.__traceback__
    while tb is not None:
        out.append((str(tb.tb_frame.f_globals.get("__name__", "")), tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    return out


def _by_prefix(error: BaseException, table) -> str | None:
    for name in _class_names(error):
        for prefix, code in table:
            if name == prefix or (prefix.endswith(".") and name.startswith(prefix)):
                return code
    return None


def _project_code(error: BaseException) -> str | None:
    code = getattr(error, "code", None)
    if not isinstance(code, str):
        return None
    if code in CAUSES:
        return code
    if code == "wrong_password":
        return "wrong_password"
    if code in SENDER_REFUSAL_CODES:
        return "request_refused"
    if code in ("protocol", "illegal_transition"):
        return "protocol_closed"
    if code == "illegal_exchange_state":
        return "ledger_conflict"
    return None


def _network(error: BaseException) -> str | None:
    if not isinstance(error, OSError):
        return None
    modules = [module for module, _ in _frames(error)]
    for prefixes, code in _NETWORK_MODULES:
        if any(module.startswith(prefixes) for module in modules):
            return code
    return None


def classify(error: BaseException | None, task_id: str | None = None) -> Cause:
    """The cause of a failure.

    :param error: the exception the task failed with (``None``: Airflow stopped the try).
    :param task_id: the failed task, for a sensor failing as designed and as a last resort.
    """
    if error is None:
        return CAUSES["task_stopped"]
    chain = list(_chain(error))
    for exc in chain:  # the agency's database or machine failed: whatever the outer error says
        code = _by_prefix(exc, _AGENCY_MARKERS)
        if code is not None:
            return CAUSES[code]
        frames = _frames(exc)
        if any(function in _IDENTITY_FUNCTIONS for _, function in frames):
            return CAUSES["agency_identity"]
        if frames and frames[-1][0] == _STAGING_MODULE:
            return CAUSES["staging_missing"]
    for finder in (_project_code, lambda e: _by_prefix(e, _CLASS_CAUSES), _network):
        for exc in chain:
            code = finder(exc)
            if code is not None:
                return CAUSES[code]
    if task_id in TASK_CAUSES:
        return CAUSES[TASK_CAUSES[task_id]]
    if task_id in TASK_SECTIONS:
        return Cause("unknown", TASK_SECTIONS[task_id], AGENCY, CAUSES["unknown"].summary)
    return CAUSES["unknown"]


def refused_by_sender(error: BaseException) -> bool:
    """Whether ``error`` is a refusal the municipality caused — the only kind that may be answered
    with a refusal report. A failure on the agency's side never is, whatever error wraps it."""
    return classify(error).party == MUNICIPALITY


def require_sender_refusal(error: BaseException, subject: str) -> None:
    """Raise :class:`AgencySideError` unless ``error`` is a refusal the municipality caused.

    Called by what quarantines a request and reports it, before it moves or sends anything.

    :param subject: what is being refused, for the message (``exchange 12``, ``protocol 3``).
    """
    if refused_by_sender(error):
        return
    cause = classify(error)
    raise AgencySideError(
        f"{subject}: {cause.code} is a failure on the agency's side, not a refusal: nothing was quarantined or "
        f"reported to the municipality. Runbook: '{cause.section}'.",
        code=cause.code,
    ) from error


# ------------------------------------------------------------------ the task.failed audit fact

_FACT = re.compile(r"^cause (?P<code>[a-z_]+): (?P<text>.*) \| runbook: " + re.escape(RUNBOOK) + r" § '(?P<section>.+)'$",
                   re.DOTALL)


def fact_message(cause: Cause, text: str) -> str:
    """The message of a ``task.failed`` fact: ``cause <code>: <text> | runbook: <pointer>``."""
    return f"cause {cause.code}: {text[:1500]} | runbook: {cause.runbook}"


@dataclass(frozen=True)
class RecordedFailure:
    """What a ``task.failed`` fact says, read back."""

    cause: str
    section: str
    text: str

    @property
    def runbook(self) -> str:
        return f"{RUNBOOK} § '{self.section}'"


def parse_fact_message(message: str | None) -> RecordedFailure | None:
    """The cause, runbook section and text of a ``task.failed`` message (``None``: another format)."""
    match = _FACT.match(message or "")
    if match is None:
        return None
    return RecordedFailure(cause=match["code"], section=match["section"], text=match["text"])
