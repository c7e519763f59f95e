"""Selection and the referral list: nothing without consent, nothing beyond the agreement, once per family."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from tests.referral.builders import (
    ELSEWHERE, NAME, RUN, SYSTEM, TODAY, USER, candidate_csv, family, password, read_workbook, referral_protocol,
)
from welfare_exchange import audit, ledger
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import AuditRecord, Exchange, Referral, RetentionItem
from welfare_exchange.errors import ProtocolError
from welfare_exchange.protocols import get, transition
from welfare_exchange.referral import candidates, files, listing, selection
from welfare_exchange.staging import Staging


def _import(*families):
    with session_scope() as session:
        candidates.import_candidates(session, candidate_csv(families), today=TODAY, actor=USER)


def _build(protocol_id, on, key):
    with session_scope() as session:
        protocol = get(session, protocol_id)
        return listing.build_referral_list(session, protocol, on, password=key, actor=SYSTEM)


def _protocol(**kwargs) -> int:
    with session_scope() as session:
        return referral_protocol(session, **kwargs).id


def _codes_by_family() -> dict[bytes, str]:
    with session_scope() as session:
        return {bytes(r.family_ref): r.code for r in session.scalars(sa.select(Referral))}


def _deliver(exchange_id: int, at: dt.datetime) -> None:
    """What the delivery step does around the channel: the side effect, then mark_sent in its transaction."""
    key = listing.delivery_key(exchange_id)
    with session_scope() as session:
        ledger.begin_side_effect(session, key, kind=listing.DELIVERY_KIND, exchange_id=exchange_id)
    with session_scope() as session:
        ledger.complete_side_effect(session, key)
        listing.mark_sent(session, exchange_id, at=at, actor=SYSTEM)


def test_only_families_with_consent_at_home_in_kansarmoede_and_not_referred_are_selected(project_db):
    key = password()
    eligible = family()
    later_consent = family(given=RUN + dt.timedelta(days=3))
    others = {
        "no consent": family(given=None),
        "withdrawn": family(withdrawn=dt.date(2026, 10, 15)),
        "elsewhere": family(nis=ELSEWHERE),
        "two criteria": family(criteria=("income", "housing")),
        "consent after the run date": later_consent,
    }
    _import(eligible, *others.values())
    protocol_id = _protocol()
    with session_scope() as session:
        counts = selection.selection_counts(session, get(session, protocol_id), RUN)
        assert (counts.in_municipality, counts.kansarmoede, counts.no_consent, counts.withdrawn, counts.selected) == (5, 4, 2, 1, 1)
    built = _build(protocol_id, RUN, key)
    assert built.rows == 1
    assert set(_codes_by_family()) == {audit.subject_key(eligible.child)}
    # Already referred: a later run does not select it again, only the one whose consent came later.
    _deliver(built.exchange_id, dt.datetime(2026, 11, 2, 10, tzinfo=dt.timezone.utc))
    later = _build(protocol_id, RUN + dt.timedelta(days=7), key)
    assert later.rows == 1
    assert set(_codes_by_family()) == {audit.subject_key(eligible.child), audit.subject_key(later_consent.child)}
    assert _build(protocol_id, RUN + dt.timedelta(days=14), key) is None
    # Another agreement (a second protocol) is another referral: once per family per agreement.
    other_protocol = _protocol()
    assert _build(other_protocol, RUN + dt.timedelta(days=14), key).rows == 2


def test_the_list_carries_only_the_agreements_fields(project_db):
    key = password()
    one = family()
    _import(one)
    narrow = _protocol(fields=["parent_name", "criteria"])
    sheets = read_workbook(_build(narrow, RUN, key).data, key)
    header, row = sheets["Doorverwijzingen"]
    assert header == ["Doorverwijzingsnummer", "Naam ouder", "Criteria kansarmoede"]
    assert row[0].startswith("DV-") and row[1] == NAME and row[2] == "maandinkomen, huisvesting, gezondheid"
    everything = repr(sheets)
    for absent in (one.phone, one.email, one.address[0], one.child, one.parent):
        assert absent not in everything
    assert one.born.strftime("%Y-%m") not in repr(sheets["Doorverwijzingen"])
    info = dict((r[0], r[1]) for r in sheets["Info"])
    assert info["Samenwerkingsovereenkomst"].startswith("SO/2026/3") and info["Beroepsgeheim"] == "art. 7 van de overeenkomst"

    wide = _protocol()
    header, row = read_workbook(_build(wide, RUN, key).data, key)["Doorverwijzingen"]
    assert header == ["Doorverwijzingsnummer", "Naam ouder", "Adres", "Postcode", "Gemeente", "Telefoon", "E-mail",
                      "Geboortemaand kind", "Criteria kansarmoede"]
    assert row[1:] == [NAME, *one.address, one.phone, one.email, one.born.strftime("%Y-%m"),
                       "maandinkomen, huisvesting, gezondheid"]
    assert one.child not in repr(row)


def test_a_rerun_gives_the_same_bytes_and_refers_nobody_twice(project_db):
    key = password()
    _import(family(), family())
    protocol_id = _protocol()
    first = _build(protocol_id, RUN, key)
    again = _build(protocol_id, RUN, key)
    assert (again.exchange_id, again.data, again.rows) == (first.exchange_id, first.data, 2)
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 2
        exchange = session.get(Exchange, first.exchange_id)
        assert exchange.state == "built" and exchange.result_sha256 == first.sha256
        deadline = files.schedule_retention(session, get(session, protocol_id), exchange)
        item = session.scalars(sa.select(RetentionItem).where(RetentionItem.exchange_id == exchange.id)).one()
        assert (item.kind, item.where, item.deadline) == ("staging", "local", deadline) and deadline == RUN + dt.timedelta(days=90)
        assert session.scalar(
            sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "referral.list_built")
        ) == 1


def test_closed_gate_selects_nothing(project_db):
    _import(family())
    protocol_id = _protocol()
    with session_scope() as session:
        transition(session, protocol_id, "suspend", actor=USER)
    with pytest.raises(ProtocolError, match="suspended"):
        _build(protocol_id, RUN, password())
    with pytest.raises(ProtocolError, match="valid only from"):
        _build(_protocol(), dt.date(2026, 9, 30), password())
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 0


def test_consent_withdrawn_before_delivery_leaves_the_family_out(project_db):
    key = password()
    stays, withdraws = family(), family()
    _import(stays, withdraws)
    protocol_id = _protocol()
    built = _build(protocol_id, RUN, key)
    assert built.rows == 2
    withdraws.withdrawn = RUN
    _import(stays, withdraws)
    with session_scope() as session:
        ready = listing.for_delivery(session, get(session, protocol_id), built.exchange_id, RUN, password=key, actor=SYSTEM)
    assert ready.rows == 1 and ready.data != built.data
    assert len(read_workbook(ready.data, key)["Doorverwijzingen"]) == 2  # header + one family
    assert set(_codes_by_family()) == {audit.subject_key(stays.child)}
    with session_scope() as session:
        left = session.scalars(sa.select(AuditRecord).where(AuditRecord.action == "referral.left_out")).one()
        assert left.subjects_count == 2  # the child and its parent, by keyed reference
    # Once the delivery has begun the bytes are fixed, whatever happens to consent.
    with session_scope() as session:
        ledger.begin_side_effect(session, listing.delivery_key(built.exchange_id), kind=listing.DELIVERY_KIND,
                                 exchange_id=built.exchange_id)
    stays.withdrawn = RUN
    _import(stays, withdraws)
    with session_scope() as session:
        fixed = listing.for_delivery(session, get(session, protocol_id), built.exchange_id, RUN, password=key, actor=SYSTEM)
    assert fixed.data == ready.data


def test_mark_sent_is_atomic_with_the_delivery_record(project_db):
    key = password()
    _import(family(), family(), family())
    protocol_id = _protocol()
    built = _build(protocol_id, RUN, key)
    at = dt.datetime(2026, 11, 2, 10, tzinfo=dt.timezone.utc)
    with pytest.raises(RuntimeError, match="crash"), session_scope() as session:
        ledger.begin_side_effect(session, listing.delivery_key(built.exchange_id), kind=listing.DELIVERY_KIND,
                                 exchange_id=built.exchange_id)
        ledger.complete_side_effect(session, listing.delivery_key(built.exchange_id))
        listing.mark_sent(session, built.exchange_id, at=at, actor=SYSTEM)
        raise RuntimeError("crash before commit")
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Referral).where(Referral.sent_at.is_not(None))) == 0
        assert session.get(Exchange, built.exchange_id).state == "built"
    _deliver(built.exchange_id, at)
    with session_scope() as session:  # and a second mark (a re-run) changes nothing
        assert listing.mark_sent(session, built.exchange_id, at=at + dt.timedelta(hours=1), actor=SYSTEM) == 0
    with session_scope() as session:
        sent = session.scalars(sa.select(Referral.sent_at)).all()
        assert len(sent) == 3 and len(set(sent)) == 1
        assert session.get(Exchange, built.exchange_id).state == "delivered"
        assert session.scalar(
            sa.select(sa.func.count()).select_from(AuditRecord).where(AuditRecord.action == "referral.list_sent")
        ) == 1
        assert audit.verify(session).ok
    # A re-run after delivery gets the delivered bytes; once retention removed them, nothing — never a new list.
    assert _build(protocol_id, RUN, key).data == built.data
    Staging(protocol_id, built.exchange_id).purge()
    assert _build(protocol_id, RUN, key) is None
    with session_scope() as session:
        exchange = session.get(Exchange, built.exchange_id)
        assert (exchange.state, exchange.result_sha256) == ("delivered", built.sha256)


def test_a_list_whose_families_all_withdrew_is_not_delivered_and_its_file_goes(project_db):
    key = password()
    only = family()
    _import(only)
    protocol_id = _protocol()
    built = _build(protocol_id, RUN, key)
    only.withdrawn = RUN
    _import(only)
    with session_scope() as session:
        assert listing.for_delivery(session, get(session, protocol_id), built.exchange_id, RUN, password=key, actor=SYSTEM) is None
        exchange = session.get(Exchange, built.exchange_id)
        assert exchange.result_sha256 is None and session.scalar(sa.select(sa.func.count()).select_from(Referral)) == 0
    assert not any(p.is_file() for p in Staging(protocol_id, built.exchange_id).folder.rglob("*"))
