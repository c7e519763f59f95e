"""The exchange ledger: one exchange per request file, side effects done once."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import given, settings
from hypothesis import strategies as st

from welfare_exchange import audit, exchange_state, ledger
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.db.engine import alembic_config, dispose_engines, upgrade
from welfare_exchange.db.models import Exchange, Protocol, RetentionItem
from welfare_exchange.protocols import create


@pytest.fixture
def protocol_id(project_db):
    with session_scope() as session:
        return create(session, nis_code="11002", municipality="Antwerpen", kind="method1", channel="sftp",
                      key_connection="k", actor=audit.Actor()).id


def test_same_request_hash_is_the_same_exchange(protocol_id):
    with session_scope() as session:
        protocol = session.get(Protocol, protocol_id)
        first, new = ledger.open_exchange(session, protocol, request_sha256="a" * 64, request_name="r.xlsx",
                                          request_size=10, dag_id="d", run_id="r1", exchange_date=dt.date(2026, 11, 28))
        again, new_again = ledger.open_exchange(session, protocol, request_sha256="a" * 64, request_name="copy.xlsx",
                                                request_size=10, dag_id="d", run_id="r2", exchange_date=dt.date(2026, 11, 29))
        assert new and not new_again and first.id == again.id and again.run_id == "r1"


def test_side_effect_is_begun_then_done_once(protocol_id):
    key = "exchange:1:deliver:result"
    with session_scope() as session:
        assert not ledger.is_done(session, key)
        ledger.begin_side_effect(session, key, kind="delivered", exchange_id=None, target="outbox/x.xlsx")
        ledger.begin_side_effect(session, key, kind="delivered", exchange_id=None, target="outbox/x.xlsx")
        assert not ledger.is_done(session, key)
        ledger.complete_side_effect(session, key, sha256="b" * 64)
        first_done = ledger.find_side_effect(session, key).done_at
        ledger.complete_side_effect(session, key, sha256="c" * 64)
        effect = ledger.find_side_effect(session, key)
        assert ledger.is_done(session, key) and effect.sha256 == "b" * 64 and effect.done_at == first_done


def test_schedule_deletion_is_idempotent(protocol_id):
    with session_scope() as session:
        for _ in range(2):
            ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=None, kind="result_file", where="sftp",
                                     location="outbox/r.xlsx", deadline=dt.date(2027, 2, 26), rule="result: 90 days")
        assert session.scalar(sa.select(sa.func.count()).select_from(RetentionItem)) == 1


def _two_exchanges(session, protocol_id):
    protocol = session.get(Protocol, protocol_id)
    return [
        ledger.open_exchange(session, protocol, request_sha256=f"{n}" * 64, request_name="aanvraag.xlsx", request_size=10,
                             dag_id="d", run_id=f"r{n}", exchange_date=dt.date(2026, 11, n))[0].id
        for n in (1, 2)
    ]


def test_a_file_name_reused_by_the_next_exchange_gets_its_own_retention_item(protocol_id):
    """A municipality sends ``aanvraag.xlsx`` every month: once last month's copy in received/ was
    deleted, this month's copy at the same path must still get (and keep) its own deletion record."""
    where = dict(kind="request_file", where="sftp", location="sftp_11002:received/aanvraag.xlsx", rule="request: 30 days")
    with session_scope() as session:
        first, second = _two_exchanges(session, protocol_id)
        old = ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=first, deadline=dt.date(2026, 12, 1),
                                       sha256="1" * 64, **where)
        old.deleted_at = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
        new = ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=second, deadline=dt.date(2027, 1, 1),
                                       sha256="2" * 64, **where)
        assert new.id != old.id and new.deleted_at is None and new.sha256 == "2" * 64
        # A re-run of the first exchange's step never records its deleted copy again.
        again = ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=first, deadline=dt.date(2026, 12, 1),
                                         sha256="1" * 64, **where)
        assert again.id == old.id and again.deleted_at is not None
        assert session.scalar(sa.select(sa.func.count()).select_from(RetentionItem)) == 2


def test_moving_a_copy_moves_only_that_exchanges_item(protocol_id):
    where = dict(kind="request_file", where="sftp", location="sftp_11002:received/aanvraag.xlsx", rule="request: 30 days")
    with session_scope() as session:
        first, second = _two_exchanges(session, protocol_id)
        for exchange_id in (first, second):  # the first one's copy went missing, the second landed at its path
            ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=exchange_id,
                                     deadline=dt.date(2026, 12, 1), **where)
        moved = ledger.move_copy(session, "request_file", where["location"], exchange_id=second, kind="quarantine",
                                 location="sftp_11002:quarantine/aanvraag.xlsx")
        items = {i.exchange_id: (i.kind, i.location) for i in session.scalars(sa.select(RetentionItem))}
        assert moved is not None and items == {first: ("request_file", where["location"]),
                                               second: ("quarantine", "sftp_11002:quarantine/aanvraag.xlsx")}


def test_migration_0012_keeps_retention_items_and_round_trips(project_db, protocol_id):
    with session_scope() as session:
        first, _ = _two_exchanges(session, protocol_id)
        ledger.schedule_deletion(session, protocol_id=protocol_id, exchange_id=first, kind="request_file", where="sftp",
                                 location="sftp_11002:received/a.xlsx", deadline=dt.date(2026, 12, 1), rule="r")
    dispose_engines()
    command.downgrade(alembic_config(project_db), "0011")
    dispose_engines()
    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        [item] = session.scalars(sa.select(RetentionItem)).all()
        assert (item.exchange_id, item.location) == (first, "sftp_11002:received/a.xlsx")


# --------------------------------------------------------------------------- exchange states


def _exchange(session, protocol_id, sha="e"):
    protocol = session.get(Protocol, protocol_id)
    exchange, _ = ledger.open_exchange(session, protocol, request_sha256=sha * 64, request_name=None, request_size=None,
                                       dag_id="d", run_id="r", exchange_date=dt.date(2026, 11, 28))
    return exchange


def test_a_rerun_reporting_an_earlier_state_leaves_the_exchange_where_it_is(protocol_id):
    with session_scope() as session:
        exchange = _exchange(session, protocol_id)
        for state in ("validated", "matched", "built", "delivered"):
            ledger.update_exchange(session, exchange, state=state)
        for earlier in ("received", "validated", "matched", "built", "delivered"):
            ledger.update_exchange(session, exchange, state=earlier, counts={"rows": 3})
            assert (exchange.state, exchange.progress) == ("delivered", "delivered")
        assert exchange.counts == {"rows": 3}


def test_a_delivered_exchange_never_fails_is_never_refused_and_keeps_its_result_hash(protocol_id):
    with session_scope() as session:
        exchange = _exchange(session, protocol_id)
        ledger.update_exchange(session, exchange, state="built", result_sha256="a" * 64)
        ledger.update_exchange(session, exchange, state="delivered")
        for state in ("failed", "quarantined", "duplicate"):
            with pytest.raises(ledger.ExchangeStateError, match=rf"exchange {exchange.id} cannot move from 'delivered' to '{state}'"):
                ledger.update_exchange(session, exchange, state=state, failure_code="protocol_closed")
        with pytest.raises(ledger.ExchangeStateError, match="hash of its delivered result cannot change"):
            ledger.update_exchange(session, exchange, state="built", result_sha256="b" * 64)
        with pytest.raises(ledger.ExchangeStateError, match="cannot be withdrawn"):
            ledger.withdraw_result(session, exchange)
        assert (exchange.state, exchange.failure_code, exchange.result_sha256) == ("delivered", None, "a" * 64)


def test_a_failed_exchange_recovers_where_it_had_got_to_and_loses_its_failure_code(protocol_id):
    with session_scope() as session:
        exchange = _exchange(session, protocol_id)
        ledger.update_exchange(session, exchange, state="built")
        ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_closed")
        assert (exchange.state, exchange.progress, exchange.failure_code) == ("failed", "built", "protocol_closed")
        ledger.update_exchange(session, exchange, state="failed", failure_code="protocol_revoked")  # blocked again
        assert (exchange.state, exchange.failure_code) == ("failed", "protocol_revoked")
        with pytest.raises(ledger.ExchangeStateError, match="already taken past 'validated'"):
            ledger.update_exchange(session, exchange, state="quarantined", failure_code="wrong_password")
        ledger.update_exchange(session, exchange, state="validated")  # a re-run of an earlier step, protocol resumed
        assert (exchange.state, exchange.progress, exchange.failure_code) == ("built", "built", None)
        ledger.update_exchange(session, exchange, state="delivered")
        assert (exchange.state, exchange.progress) == ("delivered", "delivered")


def test_quarantined_and_duplicate_are_final(protocol_id):
    with session_scope() as session:
        refused, duplicate = _exchange(session, protocol_id, "q"), _exchange(session, protocol_id, "d")
        ledger.update_exchange(session, refused, state="quarantined", failure_code="wrong_password")
        ledger.update_exchange(session, duplicate, state="duplicate")
        for exchange in (refused, duplicate):
            before = exchange.state
            ledger.update_exchange(session, exchange, state=before)
            for state in ("validated", "delivered", "failed", "duplicate" if before == "quarantined" else "quarantined"):
                with pytest.raises(ledger.ExchangeStateError, match=f"'{before}' is final"):
                    ledger.update_exchange(session, exchange, state=state)
            assert exchange.state == before
        with pytest.raises(ValueError, match="unknown exchange state 'sent'"):
            ledger.update_exchange(session, refused, state="sent")


def test_an_erasure_withdraws_a_built_result_the_one_step_back(protocol_id):
    with session_scope() as session:
        exchange = _exchange(session, protocol_id)
        ledger.update_exchange(session, exchange, state="built", result_sha256="a" * 64)
        ledger.withdraw_result(session, exchange)
        assert (exchange.state, exchange.progress, exchange.result_sha256) == ("matched", "matched", None)
        ledger.update_exchange(session, exchange, state="built", result_sha256="c" * 64)
        assert exchange.state == "built"


_FORWARD = ("received", "validated", "matched", "built", "delivered")


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.sampled_from(ledger.EXCHANGE_STATES), max_size=12))
def test_no_sequence_of_reported_states_moves_an_exchange_back(targets):
    """Whatever states steps report, in any order: the furthest state reached never drops, a
    final state is never left, a delivered exchange never fails, and an illegal move changes nothing."""
    state, progress, furthest = "received", "received", 0
    for target in targets:
        try:
            step = exchange_state.move(state, target, progress)
        except exchange_state.ExchangeStateError:
            assert state in ("delivered", "duplicate", "quarantined") or target in ("duplicate", "quarantined")
            continue
        if state in ("delivered", "duplicate", "quarantined"):
            assert step.state == state
        if state != "failed" and step.state == "failed":
            assert state != "delivered"
        if step.state in _FORWARD:
            assert _FORWARD.index(step.state) >= furthest
        state, progress = step.state, step.progress
        furthest = max(furthest, _FORWARD.index(progress))
        assert _FORWARD.index(progress) == furthest


def test_migration_0007_gives_existing_exchanges_their_progress_and_round_trips(project_db, protocol_id):
    command.downgrade(alembic_config(project_db), "0004")
    dispose_engines()
    rows = [("matched", None), ("delivered", "a" * 64), ("failed", "b" * 64), ("failed", None), ("quarantined", None)]
    with get_engine(project_db).begin() as conn:
        for n, (state, result) in enumerate(rows):
            conn.execute(
                sa.text("INSERT INTO exchange (protocol_id, request_sha256, state, result_sha256, created_at, updated_at) "
                        "VALUES (:p, :sha, :state, :result, :now, :now)"),
                {"p": protocol_id, "sha": f"{n:064d}", "state": state, "result": result, "now": dt.datetime(2026, 11, 1)},
            )
    dispose_engines()

    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        got = [(e.state, e.progress) for e in session.scalars(sa.select(Exchange).order_by(Exchange.id))]
        assert got == [("matched", "matched"), ("delivered", "delivered"), ("failed", "built"), ("failed", None),
                       ("quarantined", None)]
        failed = session.scalars(sa.select(Exchange).where(Exchange.state == "failed").order_by(Exchange.id)).first()
        ledger.update_exchange(session, failed, state="validated")  # recovers where it had got to
        assert failed.state == "built"

    command.downgrade(alembic_config(project_db), "0004")
    dispose_engines()
    upgrade(project_db)
    dispose_engines()
    with session_scope() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Exchange)) == len(rows)


# --------------------------------------------------------------------------- ledger.side_effect


def _state(key):
    with session_scope() as session:
        effect = ledger.find_side_effect(session, key)
        return None if effect is None else (effect.state, effect.sha256, effect.detail)


def test_side_effect_commits_the_intent_before_the_act_and_an_interrupted_try_finds_its_note(project_db):
    with pytest.raises(RuntimeError), ledger.side_effect("t:1", kind="delivered") as effect:
        assert effect.pending and not effect.interrupted
        assert _state("t:1") == ("pending", None, None)  # committed before the act
        with session_scope() as session:
            ledger.find_side_effect(session, "t:1").detail = {"sha256": "noted"}
        raise RuntimeError("crash between act and record")
    with ledger.side_effect("t:1", kind="delivered") as effect:
        assert effect.pending and effect.interrupted and effect.detail == {"sha256": "noted"}
        effect.complete(sha256="a" * 64, detail={"bytes": 3})
    with ledger.side_effect("t:1", kind="delivered") as effect:
        assert effect.was_done and not effect.pending and (effect.sha256, effect.detail) == ("a" * 64, {"bytes": 3})
    assert _state("t:1") == ("done", "a" * 64, {"bytes": 3})


def test_forget_on_error_forgets_only_an_act_that_did_not_reach_its_record(project_db):
    with pytest.raises(ConnectionError), ledger.side_effect("t:2", kind="report", forget_on_error=True):
        raise ConnectionError("the server refused the message")
    assert _state("t:2") is None  # the retry sends
    with pytest.raises(ZeroDivisionError), ledger.side_effect("t:2", kind="report", forget_on_error=True) as effect:
        with session_scope() as session:
            effect.complete(sha256="b" * 64, session=session)
            raise ZeroDivisionError  # the record failed after the act: the intent stays
    assert _state("t:2") == ("pending", None, None)


def test_same_transaction_records_intent_and_outcome_together_or_nothing(project_db):
    with pytest.raises(RuntimeError), ledger.side_effect("t:3", kind="letters", same_transaction=True) as effect:
        assert effect.pending and _state("t:3") is None
        raise RuntimeError
    assert _state("t:3") is None
    with ledger.side_effect("t:3", kind="letters", target="b1.pdf", same_transaction=True) as effect:
        assert _state("t:3") is None
        effect.complete(sha256="c" * 64, detail={"letters": 2})
    assert _state("t:3") == ("done", "c" * 64, {"letters": 2})


def test_keep_pending_leaves_the_intent_and_a_body_without_complete_is_completed_empty(project_db):
    with ledger.side_effect("t:4", kind="alert") as effect:
        effect.keep_pending()
    assert _state("t:4") == ("pending", None, None)
    with ledger.side_effect("t:4", kind="alert"):
        pass
    assert _state("t:4") == ("done", None, None)


def test_tolerant_acts_without_the_ledger_and_strict_refuses(project_db, monkeypatch):
    monkeypatch.setenv("WELFARE_EXCHANGE_DB_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/none?connect_timeout=2")
    dispose_engines()
    try:
        acted = []
        with ledger.side_effect("t:5", kind="alert", tolerant=True) as effect:
            assert effect.pending and not effect.recorded
            acted.append(1)
            effect.complete(detail={"webhook": "sent"})
        assert acted == [1]
        with pytest.raises(sa.exc.OperationalError), ledger.side_effect("t:5", kind="alert"):
            acted.append(2)
        assert acted == [1]
    finally:
        monkeypatch.undo()
        dispose_engines()
