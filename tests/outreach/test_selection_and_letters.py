"""The family selection against an independent expectation; PDF letters that carry the offer."""

from __future__ import annotations

import datetime as dt
import io

from pypdf import PdfReader

from tests.outreach.builders import OFFER, REFERENCE, build_store
from welfare_exchange.db import session_scope
from welfare_exchange.outreach import letters
from welfare_exchange.protocols.offer import validate_offer
from welfare_exchange.outreach.selection import Family, select_families
from welfare_exchange.outreach.templates import Campaign, email_message, plain_text


def test_selection_is_exactly_the_expected_families(sqlite_db):
    store = build_store("99701", families=30, seed=3)
    with session_scope() as session:
        got = select_families(session, nis_code="99701", reference_date=REFERENCE, supplements=["sociale_toeslag"])
    ids = [f.beneficiary_id for f in got]
    assert ids == sorted(ids) and len(ids) == len(set(ids)), "one family once, in a stable order"
    assert set(ids) == store.expected
    assert {f.beneficiary_id for f in got if f.channel == "letter"} == store.expected_by("letter")
    assert "insz" not in repr(got[0]) and "@" not in repr(got[0])


def _campaign() -> Campaign:
    return Campaign(exchange_id=12, municipality="Testgemeente", offer=validate_offer(OFFER), campaign_date=dt.date(2026, 11, 2))


def _families(n: int) -> list[Family]:
    return [Family(i, "0", None, f"Proefdreef {i}", "9999", "Testgemeente") for i in range(1, n + 1)]


def test_letters_render_and_carry_the_offer():
    pdf = letters.render_batch(_campaign(), _families(3))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 3
    first = reader.pages[0].extract_text()
    flat = " ".join(first.split())
    for text in (OFFER["title"], "Beste ouder", "Hoe vraagt u het aan?", OFFER["link"], OFFER["contact"]["organisation"],
                 OFFER["contact"]["phone"], "€ 1,50", "2 november 2026", "30 juni 2027", "Proefdreef 1", "9999 Testgemeente",
                 "campagne 12"):
        assert text in flat, text
    all_text = "\n".join(p.extract_text() for p in reader.pages)
    assert all(f"Proefdreef {i}\n" in all_text for i in (1, 2, 3))
    assert letters.render_batch(_campaign(), _families(3)) == pdf, "a re-render gives the same bytes"


def test_letters_are_batched_in_order():
    batches = letters.batches(_families(10), 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [f.beneficiary_id for b in batches for f in b] == list(range(1, 11))


def test_email_is_deterministic_and_says_the_same_as_the_letter():
    campaign = _campaign()
    first = email_message(campaign, beneficiary_id=7, recipient="ouder7@example.org", sender="groeipakket@agency.test")
    again = email_message(campaign, beneficiary_id=7, recipient="ouder7@example.org", sender="groeipakket@agency.test")
    other = email_message(campaign, beneficiary_id=8, recipient="ouder8@example.org", sender="groeipakket@agency.test")
    assert first == again and first[0] != other[0]
    import email as email_lib
    import email.policy

    parsed = email_lib.message_from_bytes(first[1], policy=email.policy.default)
    assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == plain_text(campaign)
    assert parsed["Subject"] == f"Testgemeente: {OFFER['title']}"


def _footers(pdf: bytes) -> list[str]:
    """Each page's footer line, read back from the PDF."""
    reader = PdfReader(io.BytesIO(pdf))
    out = []
    for page in reader.pages:
        [line] = [line for line in page.extract_text().splitlines() if " - brief " in line]
        out.append(line.strip())
    return out


def test_each_page_footer_names_its_own_letter():
    """fpdf2 draws a page's footer when the next page begins: the number must be the page's own letter."""
    pdf = letters.render_batch(_campaign(), _families(4))
    assert _footers(pdf) == [f"Groeipakket - campagne 12 - brief {n}" for n in (1, 2, 3, 4)]


def test_a_letter_spanning_two_pages_carries_its_number_on_both():
    long_offer = validate_offer({**OFFER, "what": "Een lang aanbod, in detail beschreven. " * 50,
                                 "how_to_apply": "Zo vraagt u het aan, stap voor stap. " * 40})
    campaign = Campaign(exchange_id=12, municipality="Testgemeente", offer=long_offer, campaign_date=dt.date(2026, 11, 2))
    pdf = letters.render_batch(campaign, _families(3))
    assert _footers(pdf) == [
        "Groeipakket - campagne 12 - brief 1", "Groeipakket - campagne 12 - brief 1, blad 2",
        "Groeipakket - campagne 12 - brief 2", "Groeipakket - campagne 12 - brief 2, blad 2",
        "Groeipakket - campagne 12 - brief 3", "Groeipakket - campagne 12 - brief 3, blad 2",
    ]
