"""The folder channel (one test file, registered by a fixture) carries every kind of traffic.

A Method 1 exchange (driven task by task as the DAG wires them), a structural feed (the real
``structural_feeds`` DAG, ``dag.test()``) and a retention deletion (the real retention run) — with
no line of production code knowing the channel exists: a new channel is one module plus its
registration.
"""

from __future__ import annotations

import json
import secrets

import sqlalchemy as sa

from tests.channels.conftest import sha256
from tests.exchange.builders import build_world, encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE, _signed_protocol
from tests.exchange.stepper import TASKS, StepRun
from tests.feeds.conftest import FeedMunicipality, FeedWorld, build_store, sign_structural
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import Exchange, RetentionItem
from welfare_exchange.orchestration.dag_factory import method1_dags
from welfare_exchange.protocols import registry as protocol_registry
from welfare_exchange.retention import runner
from welfare_exchange.orchestration.sensors.channel_arrival import ChannelArrivalSensor

ACTOR = audit.Actor(type="system", name="folder-test")


def test_a_method1_exchange_and_its_retention_over_the_folder_channel(sqlite_db, folder_channel, monkeypatch):
    nis, conn = "99991", "folder_99991"
    protocol_id, password = _signed_protocol(monkeypatch, nis, municipality="Mapgemeente", channel="folder",
                                             channel_connection=conn)
    world = build_world(nis, children=60, seed=9991)

    # The DAG factory asks the channel for its sensor: the generic one, which asks the channel.
    with session_scope() as session:
        protocol_registry.write_snapshot(session)
    [dag] = [d for d in method1_dags().values() if d.params.get("protocol_id") == protocol_id]
    assert isinstance(dag.get_task("wait_for_request"), ChannelArrivalSensor)
    assert "over channel `folder`" in dag.doc_md

    inbox = folder_channel.folder(conn, "inbox")
    (inbox / "aanvraag.xlsx").write_bytes(encrypted_request([n for n, _ in world.children[:40]], password))
    item = folder_channel.find_request(protocol_id, actor=ACTOR, on=EXCHANGE_DATE)
    run = StepRun(protocol_id, "manual__folder", EXCHANGE_DATE, item)

    assert set(run.whole_run().values()) == {"success"}, run.errors
    assert run.clear(*TASKS)["deliver_result"] == "success"  # cleared whole: nothing is delivered twice
    exchange = run.exchange()
    outbox = {p.name: p.read_bytes() for p in folder_channel.folder(conn, "outbox").iterdir()}
    results = [d for name, d in outbox.items() if name.endswith(".xlsx")]
    assert [sha256(d) for d in results] == [exchange.result_sha256] and exchange.state == "delivered"
    [receipt] = [d for name, d in outbox.items() if "ontvangstbevestiging" in name]  # the receipt, once, on this channel too
    assert exchange.request_sha256.encode() in receipt
    assert [e.kind for e in run.side_effects("delivered")] == ["delivered"]

    # The retention run finds the result in the outbox folder by its content, deletes it, certifies it.
    with session_scope() as session:
        [item] = session.scalars(sa.select(RetentionItem).where(RetentionItem.where == "folder",
                                                                RetentionItem.kind == "result_file"))
        deadline = item.deadline
    report = runner.delete_due(deadline, actor=ACTOR)
    assert item.id in [c.item_id for c in report.certificates] and report.still_due == 0
    assert list(folder_channel.folder(conn, "outbox").iterdir()) == []
    with session_scope() as session:
        assert audit.verify(session).ok


def test_a_structural_feed_over_the_folder_channel_arrives_once(sqlite_db, folder_channel, feed_env, monkeypatch):
    nis, conn, password = "99992", "folder_99992", secrets.token_urlsafe(12)
    monkeypatch.setenv(f"AIRFLOW_CONN_KEY_{nis}", json.dumps({"conn_type": "generic", "password": password}))
    protocol_id = sign_structural(nis, f"key_{nis}", channel="folder", channel_connection=conn)
    town = FeedMunicipality(sftp=None, protocol_id=protocol_id, password=password, numbers=build_store(nis, 9992))
    world = FeedWorld([town])

    first = world.run("2026-10")
    assert first.state == "success", {(t.task_id, t.map_index): str(t.state) for t in first.get_task_instances()}
    assert world.run("2026-10").state == "success"  # the month again: nothing sent twice

    [(name, data)] = [(p.name, p.read_bytes()) for p in folder_channel.folder(conn, "outbox").iterdir()]
    assert name.startswith(f"groeipakket_structureel_{nis}_p{protocol_id}_2026-10-01")
    rows = town.open_feed(data)["Wijzigingen"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == town.expected("2026-10")
    assert world.actions().count(("feed.delivered", "success")) == 1
    with session_scope() as session:
        [exchange] = session.scalars(sa.select(Exchange))
        kinds = sorted((i.kind, i.where) for i in session.scalars(sa.select(RetentionItem)))
    assert ("result_file", "folder") in kinds and exchange.result_sha256 == sha256(data)
