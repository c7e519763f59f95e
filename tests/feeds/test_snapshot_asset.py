"""Data-aware feeds: the import DAG emits the entitlement_snapshot Asset event, and a feed
waits for a store refreshed after its interval ended."""

from __future__ import annotations

import csv
import datetime as dt

from tests.dagutil import load_dag_file, task_states
from tests.feeds.conftest import MONTH_END
from welfare_exchange import insz

def _latest_event_time():
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    import sqlalchemy as sa

    with create_session() as session:
        return session.scalar(
            sa.select(sa.func.max(AssetEvent.timestamp)).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "entitlement_snapshot")
        )


def _drop_extract(tmp_path, monkeypatch, serial: int) -> None:
    """A one-row extract at the import DAG's drop location."""
    extract = tmp_path / "entitlements.csv"
    with open(extract, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["child_insz", "child_birth_date", "child_nis", "beneficiary_insz", "supplement", "start_date", "end_date"])
        writer.writerow([insz.make(dt.date(2015, 3, 4), serial), "2015-03-04", "44021", insz.make(dt.date(1985, 6, 7), serial + 1),
                         "sociale_toeslag", "2026-10-12", ""])
    monkeypatch.setenv("WELFARE_EXCHANGE_ENTITLEMENT_IMPORT_FILE", str(extract))


def test_import_emits_the_event_and_the_feed_waits_for_a_fresh_store(feed_world, tmp_path, monkeypatch):
    world = feed_world(1, missing_key=None)
    _drop_extract(tmp_path, monkeypatch, 11)
    before = _latest_event_time()

    imported = load_dag_file("entitlement_import").entitlement_import_dag.test(run_conf={"mode": "delta"})

    assert imported.state == "success", task_states(imported, by_map_index=True)
    after = _latest_event_time()
    assert after is not None and (before is None or after > before)

    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_SNAPSHOT_POLICY", "wait")
    run = world.run("2026-10")  # October ended before the import: the store is fresh enough
    assert run.state == "success", task_states(run, by_map_index=True)
    assert len(world.municipalities[0].feeds()) == 1

    # November has not ended: no refresh can be after its end, so the feed times out waiting
    # and delivers nothing.
    monkeypatch.setenv("WELFARE_EXCHANGE_FEED_SNAPSHOT_TIMEOUT_SECONDS", "2")
    late = world.dag().test(logical_date=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    states = task_states(late, by_map_index=True)
    assert late.state == "failed"
    assert states[("wait_for_fresh_snapshot", -1)] == "failed"
    assert states[("select_municipalities", -1)] == "upstream_failed"
    assert states[("summarise_feeds", -1)] == "failed"  # all_done, but it says the feed was not planned
    assert len(world.municipalities[0].feeds()) == 1
    assert MONTH_END["2026-10"] < dt.datetime.now(dt.timezone.utc)


def test_the_import_dag_refuses_a_truncated_full_extract_unless_confirmed(feed_world, tmp_path, monkeypatch):
    """The DAG takes the same choice as the CLI: full by default, guarded; ``allow_shrink`` confirms."""
    world = feed_world(1, missing_key=None)
    _drop_extract(tmp_path, monkeypatch, 13)
    dag = load_dag_file("entitlement_import").entitlement_import_dag
    before = _latest_event_time()

    refused = dag.test()
    assert refused.state == "failed"  # it would withdraw every entitlement of the store
    assert _latest_event_time() == before  # no snapshot event for a refused file
    assert world.actions().count(("entitlements.imported", "refused")) == 1

    confirmed = dag.test(run_conf={"allow_shrink": True})
    assert confirmed.state == "success", task_states(confirmed, by_map_index=True)
    [ti] = [t for t in confirmed.get_task_instances() if t.task_id == "import_entitlements"]
    assert ti.xcom_pull(task_ids="import_entitlements")["entitlements_withdrawn"] == 7
