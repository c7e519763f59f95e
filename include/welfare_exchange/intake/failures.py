"""Why a request file cannot be processed, in words the sender can act on.

Every refusal carries a short ``code`` (for the audit trail and for the DAG that decides what
to tell the municipality) and a message that says what is wrong and what to do. Messages are
fixed text: they never quote the file's content, never an INSZ number and never a figure, so
they are safe in task logs, the Airflow UI and e-mails.
"""

from __future__ import annotations

from welfare_exchange.errors import InputError

#: code -> message. The codes are part of the public contract (DAGs and the audit use them).
MESSAGES: dict[str, str] = {
    "wrong_password": (
        "the password does not open the request file: check the password agreed between the "
        "DPOs for this protocol and ask the municipality to re-send the file if it changed"
    ),
    "no_password": (
        "the request file is encrypted but no password was given: look up the password agreed "
        "between the DPOs for this protocol and pass it from a file or an environment variable"
    ),
    "not_encrypted": (
        "the request file is not password-protected, and the protocol requires encryption: ask "
        "the municipality to save it again with the agreed password (Excel: File > Info > "
        "Protect Workbook > Encrypt with Password; LibreOffice: Save As > Save with password)"
    ),
    "not_excel": (
        "the request file is not an Excel workbook (.xlsx or .xls): ask the municipality to save "
        "the list of INSZ numbers as an Excel workbook with the agreed password"
    ),
    "corrupt": (
        "the request file is damaged or incomplete (it may have been cut off in transfer): ask "
        "the municipality to send it again"
    ),
    "unsupported_encryption": (
        "the request file uses an encryption method this service cannot open: ask the "
        "municipality to save it again from Excel or LibreOffice as .xlsx with a password"
    ),
    "no_insz_column": (
        "no column of INSZ numbers was found in the request file: ask the municipality to put "
        "the numbers in one column with the header 'INSZ' and send the file again"
    ),
    "ambiguous_sheet": (
        "the request file has more than one sheet or column that could hold the INSZ numbers: "
        "ask the municipality to keep exactly one column headed 'INSZ' in one sheet"
    ),
    "ambiguous_column": (
        "the request file has more than one column headed like an INSZ column on the same "
        "sheet: ask the municipality to keep exactly one column headed 'INSZ'"
    ),
    "too_large": (
        "the request file is larger than this service accepts for one request: ask the "
        "municipality to check the file, or raise WELFARE_EXCHANGE_INTAKE_MAX_FILE_BYTES if the "
        "size is expected"
    ),
    "too_many_rows": (
        "the request file has more rows than this service accepts for one request: ask the "
        "municipality to check the file, or raise WELFARE_EXCHANGE_INTAKE_MAX_ROWS if the "
        "count is expected"
    ),
    "zip_bomb": (
        "the request file unpacks to far more data than a list of INSZ numbers can hold and was "
        "refused as unsafe: ask the municipality to send a plain list of INSZ numbers"
    ),
    "timeout": (
        "reading the request file took longer than this service allows and was stopped: check "
        "the file, or raise WELFARE_EXCHANGE_INTAKE_MAX_SECONDS if the machine is just slow"
    ),
    "empty": (
        "the request file holds no INSZ numbers (the sheet is empty or has only a header): ask "
        "the municipality to fill in the INSZ column and send the file again"
    ),
}


#: Message variants that share a contract code: the caller needs the code, the person the detail.
_CODE_OF_VARIANT = {"no_password": "wrong_password", "ambiguous_column": "ambiguous_sheet"}

#: Every ``IntakeError.code`` there is.
CODES = frozenset(key for key in MESSAGES if key not in _CODE_OF_VARIANT)


class IntakeError(InputError):
    """A request file that cannot be processed; ``code`` says why (one of :data:`CODES`).

    :param reason: a key of :data:`MESSAGES` (a code, or a more specific variant of one).

    The message is always the fixed text for the reason, so callers cannot leak file content
    into it by accident.
    """

    code = "intake"

    def __init__(self, reason: str) -> None:
        if reason not in MESSAGES:
            raise ValueError(f"unknown intake error reason {reason!r}")
        super().__init__(MESSAGES[reason], code=_CODE_OF_VARIANT.get(reason, reason))
