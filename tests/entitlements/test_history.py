"""The bitemporal store: full extracts withdraw, deltas do not, nothing is lost, and "what was
known at a moment" answers for any past moment — SQLite and PostgreSQL.

Files are built from synthetic numbers; assertions compare counts and booleans, so a failure
never shows an INSZ number.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
import sqlalchemy as sa

from tests.entitlements.test_import import DAD, KID_A, KID_B, KID_C, MUM, _rows, _store, _write
from welfare_exchange import insz
from welfare_exchange.cli import main
from welfare_exchange.db import get_engine, session_scope
from welfare_exchange.entitlements import history, import_csv, progress
from welfare_exchange.errors import InputError

UTC = dt.timezone.utc
T1 = dt.datetime(2026, 6, 1, 1, tzinfo=UTC)
T2 = dt.datetime(2026, 7, 1, 1, tzinfo=UTC)
T3 = dt.datetime(2026, 8, 1, 1, tzinfo=UTC)


def _known(at, **kwargs) -> list[tuple]:
    with session_scope() as session:
        versions = history.as_known_on(session, at, **kwargs)
    return sorted((v.child_insz, v.beneficiary_insz, v.supplement, str(v.start_date), str(v.end_date or "")) for v in versions)


def _as_store_rows(rows) -> list[tuple]:
    return sorted((r[0], r[3], r[4], r[5], r[6]) for r in rows)


def _row_count(url: str) -> int:
    with get_engine(url).connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM entitlement"))


def test_a_full_extract_withdraws_what_it_lacks_and_keeps_it_in_history(store_db, tmp_path):
    first = _rows()
    import_csv(_write(tmp_path / "v1.csv", first), recorded_at=T1)
    second = first[:4]  # KID_C's zorgtoeslag was withdrawn by the agency
    counts = import_csv(_write(tmp_path / "v2.csv", second), recorded_at=T2, allow_shrink=True)

    assert counts["entitlements_withdrawn"] == 1 and counts["entitlements_unchanged"] == 4
    current_is_the_file = _store(store_db) == sorted(tuple(r) for r in second)
    assert current_is_the_file
    assert _row_count(store_db) == 5  # a closed version, never a deletion
    # What was known when: before the withdrawal KID_C's row was known, after it not.
    before, after = _known(T2 - dt.timedelta(seconds=1)), _known(T2)
    assert (before == _as_store_rows(first), after == _as_store_rows(second)) == (True, True)
    assert _known(T1 - dt.timedelta(seconds=1)) == []  # nothing was known before the first import
    with session_scope() as session:
        [withdrawn] = [v for v in history.versions_of(session, KID_C)]
        assert (withdrawn.recorded_from, withdrawn.recorded_to) == (T1, T2)


def test_a_delta_only_adds_and_corrects(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T1)
    correction = [[KID_A, "2012-05-17", "11002", MUM, "sociale_toeslag", "2019-01-01", "2025-06-30"]]
    counts = import_csv(_write(tmp_path / "delta.csv", correction), delta=True, recorded_at=T2)

    assert (counts["entitlements_updated"], counts["entitlements_withdrawn"], counts["entitlements_new"]) == (1, 0, 0)
    expected = _rows()
    expected[0][6] = "2025-06-30"
    assert _store(store_db) == sorted(tuple(r) for r in expected)
    assert _row_count(store_db) == 6  # the old version of KID_A's period is kept
    old = [r for r in _known(T2 - dt.timedelta(seconds=1), children=[KID_A]) if r[2] == "sociale_toeslag"]
    new = [r for r in _known(T2, children=[KID_A]) if r[2] == "sociale_toeslag"]
    assert ([r[4] for r in old], [r[4] for r in new]) == ([""], ["2025-06-30"])


def test_a_corrected_beneficiary_is_a_withdrawal_and_a_new_entitlement(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T1)
    rows = _rows()
    rows[4][3] = MUM  # KID_C's zorgtoeslag is paid to the mother, not the father
    counts = import_csv(_write(tmp_path / "v2.csv", rows), recorded_at=T2, allow_shrink=True)
    assert (counts["entitlements_new"], counts["entitlements_withdrawn"]) == (1, 1)
    with session_scope() as session:
        paid_to = {
            (v.beneficiary_insz == MUM, v.recorded_to is None)
            for v in history.versions_of(session, KID_C)
        }
    assert paid_to == {(False, False), (True, True)}  # father: closed; mother: current
    father_then = _known(T1, beneficiaries=[DAD]) != _known(T2, beneficiaries=[DAD])
    assert father_then


@pytest.mark.parametrize("percent, refused", [(None, True), ("50", False)])
def test_the_shrink_guard_refuses_a_truncated_extract(store_db, tmp_path, monkeypatch, percent, refused):
    if percent:
        monkeypatch.setenv("WELFARE_EXCHANGE_IMPORT_MAX_WITHDRAWN_PERCENT", percent)
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T1)
    content, versions = _store(store_db), _row_count(store_db)
    truncated = _write(tmp_path / "truncated.csv", _rows()[:3])  # 2 of 5 entitlements missing: 40 %

    if refused:
        with pytest.raises(InputError) as caught:
            import_csv(truncated, recorded_at=T2)
        message = str(caught.value)
        assert "withdraw 2 of the 5 current entitlements (40.0 %)" in message and "--allow-shrink" in message
        assert "nothing was imported" in message
        unchanged = _store(store_db) == content
        assert unchanged and _row_count(store_db) == versions
        with get_engine(store_db).connect() as conn:
            audited = conn.execute(sa.text(
                "SELECT outcome, message FROM audit_record WHERE action = 'entitlements.imported' ORDER BY id DESC"
            )).first()
        assert audited.outcome == "refused" and "allowed share" in audited.message
        # Confirmed, the same file goes in.
        counts = import_csv(truncated, recorded_at=T2, allow_shrink=True)
    else:
        counts = import_csv(truncated, recorded_at=T2)
    assert counts["entitlements_withdrawn"] == 2
    assert len(_store(store_db)) == 3


def test_a_delta_never_withdraws_and_the_same_file_twice_changes_nothing(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T1)
    part = _write(tmp_path / "part.csv", _rows()[:1])
    counts = import_csv(part, delta=True, recorded_at=T2)
    again = import_csv(part, delta=True, recorded_at=T3)
    assert counts["entitlements_unchanged"] == again["entitlements_unchanged"] == 1
    assert counts["entitlements_withdrawn"] == again["entitlements_withdrawn"] == 0
    assert len(_store(store_db)) == 5 and _row_count(store_db) == 5


def test_history_only_grows_forward(store_db, tmp_path):
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T2)
    with pytest.raises(InputError, match="history only grows forward"):
        import_csv(_write(tmp_path / "v2.csv", _rows()), recorded_at=T1)
    import_csv(_write(tmp_path / "v3.csv", _rows()))  # now: after T2
    with session_scope() as session:
        assert history.history_start(session) == T2
        assert history.last_recorded(session) == T2  # nothing changed, nothing recorded


def test_a_date_means_the_end_of_that_day_in_brussels():
    assert history.moment(dt.date(2026, 10, 12)) == dt.datetime(2026, 10, 12, 22, tzinfo=UTC)  # CEST
    assert history.moment(dt.date(2026, 11, 12)) == dt.datetime(2026, 11, 12, 23, tzinfo=UTC)  # CET
    assert history.moment(dt.datetime(2026, 1, 1, 5)) == dt.datetime(2026, 1, 1, 5, tzinfo=UTC)


def test_cli_full_delta_and_allow_shrink(store_db, tmp_path, capsys):
    assert main(["entitlements", "import", str(_write(tmp_path / "v1.csv", _rows())), "--no-progress"]) == 0
    part = str(_write(tmp_path / "part.csv", _rows()[:2]))
    assert main(["entitlements", "import", part, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "--allow-shrink" in err and err.count("\n") == 1
    assert main(["entitlements", "import", part, "--delta", "--no-progress"]) == 0
    assert "(delta): " in capsys.readouterr().out
    assert len(_store(store_db)) == 5
    assert main(["entitlements", "import", part, "--allow-shrink", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 withdrawn" in out and not insz.find_insz_shaped(out)
    assert len(_store(store_db)) == 2


def test_progress_goes_to_the_log_with_speed_and_eta_and_no_numbers(store_db, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)
    monkeypatch.setattr("welfare_exchange.entitlements.importer.CHUNK_ROWS", 2)
    with caplog.at_level(logging.INFO, logger="welfare_exchange.entitlements"):
        import_csv(_write(tmp_path / "v1.csv", _rows()), progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "welfare_exchange.entitlements.progress"]
    assert any("rows/s" in line and "ETA" in line and "%" in line for line in lines)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not insz.find_insz_shaped(text)


def test_an_import_streams_in_chunks(store_db, tmp_path, monkeypatch):
    """Rows go to the database in chunks of CHUNK_ROWS, never gathered whole (the bench measures memory)."""
    from welfare_exchange.entitlements import importer

    sizes: list[int] = []
    real = importer._write_rows
    monkeypatch.setattr(importer, "CHUNK_ROWS", 3)
    monkeypatch.setattr(importer, "_write_rows", lambda conn, rows: (sizes.append(len(rows)), real(conn, rows)))
    rows = _many(10)
    import_csv(_write(tmp_path / "many.csv", rows))
    assert sizes == [3, 3, 3, 1] and len(_store(store_db)) == 10


def _many(n: int) -> list[list[str]]:
    out = []
    for i in range(n):
        born = dt.date(2010, 1, 1) + dt.timedelta(days=i)
        out.append([insz.make(born, 300), born.isoformat(), "11002", MUM, "sociale_toeslag", "2020-01-01", ""])
    return out


def test_rows_refused_after_the_first_bad_one_are_still_counted(store_db, tmp_path):
    rows = _rows() + [[KID_B, "2005-01-02", "44021", DAD, "sociale_toeslag", "2021-07-01", "x"]] * 30
    with pytest.raises(InputError) as caught:
        import_csv(_write(tmp_path / "bad.csv", rows))
    assert "30 bad rows" in str(caught.value) and "and 10 more bad rows" in str(caught.value)
    assert _store(store_db) == []



def test_a_terminal_gets_a_progress_bar_with_counts_only(store_db, tmp_path, capsys):
    assert main(["entitlements", "import", str(_write(tmp_path / "v1.csv", _rows())), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "import v1.csv: done" in err and "5 rows" in err and "rows/s" in err
    assert not insz.find_insz_shaped(err)


def test_a_first_load_rebuilds_the_indexes_it_drops(store_db, tmp_path):
    from tests.entitlements.test_generator import _schema

    before = _schema(sa.inspect(get_engine(store_db)), "entitlement")
    import_csv(_write(tmp_path / "v1.csv", _rows()), recorded_at=T1)  # an empty store: the bulk path
    get_engine(store_db).dispose()
    assert _schema(sa.inspect(get_engine(store_db)), "entitlement") == before
    assert "uq_entitlement_current" in before["indexes"]
    import_csv(_write(tmp_path / "v2.csv", _rows()[:4]), recorded_at=T2, allow_shrink=True)  # and the ordinary path after it
    assert len(_store(store_db)) == 4
