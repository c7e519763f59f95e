"""Printable letters for families without an e-mail address, batched into PDFs for the mail room.

One A4 letter per family, the address in the position of a right-hand window envelope
(C5/6 and DL alike), the same text as the e-mail (:mod:`~welfare_exchange.outreach.templates`).
Letters are batched — ``letters_per_pdf`` each — so the mail room prints a few files, not
thousands. Every letter starts on a new page; the footer carries the campaign and the letter's
number in the batch (and, on a letter's second page, the page), so a page that falls out of
the printer finds its place again.

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
    """The batch's PDF; each page remembers which letter it belongs to.

    fpdf2 draws a page's footer only when the next page is added (or the document closes), by
    which time the next letter has begun: so the footer reads the number recorded when its own
    page began, never the current letter's.
    """

    def __init__(self, campaign: Campaign) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.campaign = campaign
        self.letter_number = 0
        #: page number → (letter number, page of that letter)
        self.page_letter: dict[int, tuple[int, int]] = {}
        self.core_fonts_encoding = ENCODING
        self.set_auto_page_break(auto=True, margin=22)
        self.set_margins(22, 20, 20)
        # A fixed date: the same campaign renders byte-identical PDFs on a re-run.
        self.set_creation_date(dt.datetime.combine(campaign.campaign_date, dt.time(9, 0), dt.timezone.utc))
        self.set_title(printable(f"{AGENCY} - {campaign.municipality} - {campaign.reference}"))
        self.set_author(AGENCY)
        self.set_producer("welfare-exchange")

    def start_letter(self) -> None:
        self.letter_number += 1
        self.add_page()

    def add_page(self, *args, **kwargs) -> None:
        # Called by start_letter and by fpdf2's automatic page break inside a long letter.
        previous = self.page_letter.get(self.page)
        super().add_page(*args, **kwargs)
        if previous is not None and previous[0] == self.letter_number:
            self.page_letter[self.page] = (self.letter_number, previous[1] + 1)
        else:
            self.page_letter[self.page] = (self.letter_number, 1)

    def footer(self) -> None:
        letter, page = self.page_letter[self.page]
        self.set_y(-15)
        self.set_font("helvetica", size=8)
        self.cell(0, 5, printable(footer_text(self.campaign, letter, page)), align="C")


def footer_text(campaign: Campaign, letter: int, page: int = 1) -> str:
    """The footer of a letter's page: campaign, letter number in the batch, and its page after the first."""
    text = f"{AGENCY} - {campaign.reference} - brief {letter}"
    return text if page == 1 else f"{text}, blad {page}"


def _letter(pdf: _LetterPdf, family: Family) -> None:
    campaign = pdf.campaign
    pdf.start_letter()
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
