"""Printable letters for families without an e-mail address, batched into PDFs for the mail room.

One A4 letter per family, the address in the position of a right-hand window envelope
(C5/6 and DL alike), the same text as the e-mail (:mod:`~welfare_exchange.outreach.templates`).
Letters are batched — ``letters_per_pdf`` each — so the mail room prints a few files, not
thousands. Every letter starts on a new page; the footer carries the campaign and the letter's
number in the batch, so a page that falls out of the printer finds its place again.

The PDFs hold names of places and addresses: they are written encrypted at rest by the
caller (the staging area), never as plaintext files.

Core PDF fonts (Helvetica) in Windows-1252 cover Dutch and French (é, ë, €, “ ”) without a
font file on the machine; anything beyond that prints as ``?`` rather than failing a batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from fpdf import FPDF

from welfare_exchange.outreach.selection import Family
from welfare_exchange.outreach.templates import AGENCY, Campaign, body_paragraphs, dutch_date

ENCODING = "windows-1252"
#: Address window of a right-hand window envelope (mm from the page's top-left corner).
WINDOW_X, WINDOW_Y, WINDOW_W = 110, 50, 85


def printable(text: str) -> str:
    """``text`` with what the core fonts cannot print replaced, never an exception."""
    return text.encode(ENCODING, errors="replace").decode(ENCODING)


class _LetterPdf(FPDF):
    def __init__(self, campaign: Campaign) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.campaign = campaign
        self.letter_number = 0
        self.core_fonts_encoding = ENCODING
        self.set_auto_page_break(auto=True, margin=22)
        self.set_margins(22, 20, 20)
        # A fixed date: the same campaign renders byte-identical PDFs on a re-run.
        self.set_creation_date(dt.datetime.combine(campaign.campaign_date, dt.time(9, 0), dt.timezone.utc))
        self.set_title(printable(f"{AGENCY} - {campaign.municipality} - {campaign.reference}"))
        self.set_author(AGENCY)
        self.set_producer("welfare-exchange")

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=8)
        self.cell(0, 5, printable(f"{AGENCY} - {self.campaign.reference} - brief {self.letter_number}"), align="C")


def _letter(pdf: _LetterPdf, family: Family) -> None:
    campaign = pdf.campaign
    pdf.letter_number += 1
    pdf.add_page()
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(0, 8, printable(AGENCY), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", size=9)
    pdf.cell(0, 5, printable(f"namens {campaign.municipality}"), new_x="LMARGIN", new_y="NEXT")

    pdf.set_xy(WINDOW_X, WINDOW_Y)
    pdf.set_font("helvetica", size=11)
    address = "\n".join(["Aan de ouder(s) van dit gezin", family.address_line or "", f"{family.postcode} {family.city}"])
    pdf.multi_cell(WINDOW_W, 5.5, printable(address))

    pdf.set_xy(pdf.l_margin, WINDOW_Y + 40)
    pdf.set_font("helvetica", size=10)
    pdf.cell(0, 6, printable(f"Brussel, {dutch_date(campaign.campaign_date)}"), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, printable(f"Referentie: {campaign.reference}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("helvetica", "B", 12)
    pdf.multi_cell(0, 6, printable(campaign.subject), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    for heading, text in body_paragraphs(campaign):
        if heading:
            pdf.set_font("helvetica", "B", 11)
            pdf.multi_cell(0, 5.5, printable(heading), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 5.5, printable(text), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)


def render_batch(campaign: Campaign, families: Sequence[Family]) -> bytes:
    """One PDF with a letter for each family (in the given order)."""
    pdf = _LetterPdf(campaign)
    for family in families:
        _letter(pdf, family)
    return bytes(pdf.output())


def batches(families: Sequence[Family], letters_per_pdf: int) -> list[list[Family]]:
    """The letter families cut into batches of at most ``letters_per_pdf`` (order kept)."""
    size = max(1, letters_per_pdf)
    return [list(families[i : i + size]) for i in range(0, len(families), size)]
