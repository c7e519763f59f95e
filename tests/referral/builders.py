"""Referral test worlds: a signed referral protocol, candidate files, reading encrypted workbooks back.

Every INSZ is made at test time (:func:`welfare_exchange.insz.make`); the one parent name the
privacy checks look for, :data:`NAME`, is invented and appears nowhere but in test data.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import secrets
from dataclasses import dataclass, field

import xlsxwriter
from python_calamine import CalamineWorkbook

from welfare_exchange import audit, insz
from welfare_exchange.intake import encrypt_agile
from welfare_exchange.intake.decrypt import decrypt
from welfare_exchange.protocols import create, transition
from welfare_exchange.referral.candidates import REQUIRED_COLUMNS
from welfare_exchange.referral.criteria import CRITERIA

USER = audit.Actor(type="user", name="tester")
SYSTEM = audit.Actor(type="system", name="airflow", dag_id="referral_test", run_id="manual__1", task_id="t", try_number=1)
NIS, ELSEWHERE = "44021", "11002"
SIGNED = dt.date(2026, 10, 1)
RUN = dt.date(2026, 11, 2)
TODAY = dt.date(2026, 11, 29)
#: A parent name no real person carries: the privacy checks scan for it.
NAME = "Quirsabelle Vandermoortelkx"
COLUMNS = REQUIRED_COLUMNS + ("parent_insz",)
_serials = itertools.count(1)


def password() -> str:
    """A fresh file password (never a committed one)."""
    return secrets.token_urlsafe(12)


def referral_protocol(session, *, fields=None, channel="sftp", sign=True, **overrides):
    values = dict(
        nis_code=NIS, municipality="Gent", kind="referral", channel=channel, key_connection="key_referral",
        agreement_ref="SO/2026/3", agreement_date=dt.date(2026, 9, 15), secrecy_conditions="art. 7 van de overeenkomst",
        college_decision_ref="BCSD/2026/12", college_decision_date=dt.date(2026, 9, 1),
        dpo_advice_date=dt.date(2026, 9, 10), allowed_fields=fields, actor=USER,
        sender_address="sociaalhuis@gent.example" if channel == "smime" else None,
    )
    values.update(overrides)
    protocol = create(session, **values)
    if sign:
        for action in ("submit", "advise", "sign"):
            transition(session, protocol.id, action, actor=USER, on=SIGNED)
    return protocol


@dataclass
class Family:
    """One candidate line (personal data: only ever in test data)."""

    child: str
    born: dt.date
    nis: str = NIS
    criteria: tuple[str, ...] = ("income", "housing", "health")
    given: dt.date | None = dt.date(2026, 9, 20)
    withdrawn: dt.date | None = None
    name: str = NAME
    address: tuple[str, str, str] = ("Kwetselstraat 7", "9000", "Gent")
    phone: str = "0000 123456"
    email: str = "ouder@example.org"
    parent: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def values(self) -> dict[str, str]:
        out = {
            "child_insz": self.child, "child_birth_date": self.born.isoformat(), "child_nis": self.nis,
            "parent_name": self.name, "parent_address_line": self.address[0], "parent_postcode": self.address[1],
            "parent_city": self.address[2], "parent_phone": self.phone, "parent_email": self.email,
            "consent_given_on": self.given.isoformat() if self.given else "",
            "consent_withdrawn_on": self.withdrawn.isoformat() if self.withdrawn else "",
            "parent_insz": self.parent or "",
            **{f"criterion_{c}": "1" if c in self.criteria else "0" for c in CRITERIA},
        }
        out.update(self.extra)
        return out


def family(**overrides) -> Family:
    """A family in kansarmoede with consent, domiciled in :data:`NIS`; a new child number each time."""
    born = overrides.pop("born", dt.date(2026, 8, 1) + dt.timedelta(days=next(_serials) % 40))
    child = insz.make(born, 100 + next(_serials) % 800)
    parent = insz.make(dt.date(1994, 3, 3), 100 + next(_serials) % 800)
    return Family(child=child, born=born, **{"parent": parent, **overrides})


def candidate_csv(families, columns=COLUMNS) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for f in families:
        values = f.values()
        writer.writerow([values.get(c, "") for c in columns])
    return out.getvalue().encode("utf-8")


def read_workbook(data: bytes, password: str) -> dict[str, list[list]]:
    """Every sheet of an encrypted xlsx, decrypted in memory, as lists of cells."""
    plain = decrypt(data, password, "agile")
    book = CalamineWorkbook.from_filelike(io.BytesIO(plain))
    try:
        return {name: book.get_sheet_by_name(name).to_python() for name in book.sheet_names}
    finally:
        book.close()


def feedback_file(rows, password: str | None, *, headings=("Doorverwijzingsnummer", "Resultaat", "Datum")) -> bytes:
    """A feedback workbook as a Sociaal Huis makes it (xlsxwriter), encrypted unless ``password`` is None."""
    buffer = io.BytesIO()
    book = xlsxwriter.Workbook(buffer, {"in_memory": True})
    sheet = book.add_worksheet("Terugkoppeling")
    for col, heading in enumerate(headings):
        sheet.write_string(0, col, heading)
    for r, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if isinstance(value, dt.date):
                sheet.write_datetime(r, col, dt.datetime.combine(value, dt.time()), book.add_format({"num_format": "yyyy-mm-dd"}))
            elif value is not None:
                sheet.write_string(r, col, str(value))
    book.close()
    plain = buffer.getvalue()
    return plain if password is None else encrypt_agile(plain, password)
