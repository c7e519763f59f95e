"""Request intake: the municipality's encrypted Excel file in, validated INSZ numbers out.

This is the system's one door for outside input. :func:`read_request` decrypts every Excel
encryption that arrives (in memory, password verified first), reads the sheet fast and as
text, finds the INSZ column, validates each number (NN or BIS, check digits, the protocol's
age window on the exchange date, duplicates) and refuses bad files with an
:class:`IntakeError` whose ``code`` says why and whose message says what to do.
"""

from welfare_exchange.intake.decrypt import detect_encryption, encrypt_agile
from welfare_exchange.intake.failures import CODES, IntakeError
from welfare_exchange.intake.reader import IntakeLimits, IntakeResult, read_request
from welfare_exchange.intake.validation import REASON_LABELS, REPORT_HEADER, ValidationReport

__all__ = [
    "CODES",
    "REASON_LABELS",
    "REPORT_HEADER",
    "IntakeError",
    "IntakeLimits",
    "IntakeResult",
    "ValidationReport",
    "detect_encryption",
    "encrypt_agile",
    "read_request",
]
