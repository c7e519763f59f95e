"""Subject access from history: per exchange, the person's entitlement versions the agency knew
when that exchange read the store — also after a later correction — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa

from tests.entitlements.test_import import KID_B, MUM, _rows, _write
from tests.feeds.conftest import sign_structural
from tests.retention.helpers import exchange as make_exchange
from tests.retention.helpers import signed_protocol
from welfare_exchange import audit, insz
from welfare_exchange.cli import main
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange
from welfare_exchange.entitlements import import_csv
from welfare_exchange.subjects import access

UTC = dt.timezone.utc
JULY, SEPTEMBER, OCTOBER = (dt.datetime(2026, m, 1, 1, tzinfo=UTC) for m in (7, 9, 10))
ACTOR = audit.Actor(type="user", name="subject-test")


def _exchange_on(protocol_id: int, opened: dt.datetime, tag: str, subjects: list[str]) -> int:
    exchange_id = make_exchange(protocol_id, tag=tag, on=opened.date())
    with session_scope() as session:
        session.execute(sa.update(Exchange).where(Exchange.id == exchange_id).values(created_at=opened))
        audit.record(session, "request.subjects", actor=ACTOR, exchange_id=exchange_id, subjects=subjects)
    return exchange_id


def test_each_exchange_names_the_versions_known_when_it_ran(project_db, tmp_path, capsys):
    import_csv(_write(tmp_path / "july.csv", _rows()), recorded_at=JULY)
    rows = _rows()
    rows[2][6] = "2020-12-31"  # KID_B's first sociale toeslag ended earlier than first recorded
    import_csv(_write(tmp_path / "october.csv", rows), recorded_at=OCTOBER)
    protocol = signed_protocol("44021")
    before = _exchange_on(protocol, SEPTEMBER, "sept", [KID_B, MUM])  # between the two extracts
    after = _exchange_on(protocol, OCTOBER + dt.timedelta(days=3), "oct", [KID_B])
    early = _exchange_on(protocol, JULY - dt.timedelta(days=30), "june", [KID_B])  # before the store held anything

    with session_scope() as session:
        [child] = access.subject_access(session, [KID_B], actor=ACTOR)
    by_id = {e.exchange_id: e for e in child.exchanges}
    assert set(by_id) == {before, after, early}
    september = sorted((k["supplement"], k["period_start"], k["period_end"], k["superseded_at"] is not None, k["role"])
                       for k in by_id[before].entitlements_known)
    assert september == [("sociale_toeslag", "2019-01-01", "2021-06-30", True, "child"),
                         ("sociale_toeslag", "2021-07-01", None, False, "child")]
    october = sorted((k["period_start"], k["period_end"], k["superseded_at"]) for k in by_id[after].entitlements_known)
    assert october == [("2019-01-01", "2020-12-31", None), ("2021-07-01", None, None)]
    assert by_id[early].entitlements_known == [] and by_id[early].before_store_history
    assert by_id[before].store_read_at == SEPTEMBER.isoformat(timespec="seconds")

    with session_scope() as session:
        [mother] = access.subject_access(session, [MUM], actor=ACTOR)
    [disclosure] = mother.exchanges
    roles = sorted((k["role"], k["supplement"]) for k in disclosure.entitlements_known)
    assert roles == [("beneficiary", "schooltoeslag"), ("beneficiary", "sociale_toeslag"), ("beneficiary", "sociale_toeslag")]

    # The operator's text and JSON: versions with dates, never a number.
    path = tmp_path / "person.txt"
    path.write_text(f"{KID_B}\n")
    assert main(["subject-access", "--insz-file", str(path)]) == 0
    text = capsys.readouterr().out
    assert "sociale toeslag as the child, 2019-01-01 to 2021-06-30 (recorded 2026-07-01; corrected or withdrawn on 2026-10-01)" in text
    assert "entitlements known then: cannot be told (the entitlement store's history begins later)" in text
    assert main(["subject-access", "--insz-file", str(path), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["persons"][0]["exchanges"][0]["entitlements_known"] is not None
    assert not insz.find_insz_shaped(text + out)


def test_a_feed_exchange_is_explained_with_the_knowledge_at_its_interval_end(project_db, tmp_path):
    import_csv(_write(tmp_path / "july.csv", _rows()), recorded_at=JULY)
    rows = _rows()
    rows[2][6] = "2020-12-31"
    import_csv(_write(tmp_path / "october.csv", rows), recorded_at=OCTOBER + dt.timedelta(days=9))
    protocol = sign_structural("44021", "key_44021")
    feed = make_exchange(protocol, tag="feed-sep", on=dt.date(2026, 10, 1))  # September's feed: exchange_date = its end
    with session_scope() as session:
        audit.record(session, "feed.changes_detected", actor=ACTOR, exchange_id=feed, subjects=[KID_B])
        [report] = access.subject_access(session, [KID_B], actor=ACTOR)
    [disclosure] = report.exchanges
    assert disclosure.store_read_at == "2026-09-30T22:00:00+00:00"  # midnight in Brussels
    assert sorted(k["period_end"] or "" for k in disclosure.entitlements_known) == ["", "2021-06-30"]
