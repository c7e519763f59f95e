"""A structural feed over S/MIME e-mail: the municipality whose protocol names the e-mail channel
gets its monthly feed as an encrypted message (aiosmtpd into dovecot on loopback), opened as its
DPO does — ``openssl smime -decrypt``, then the agreed file password — exactly once."""

from __future__ import annotations

import email
import email.policy
import json
import secrets

import sqlalchemy as sa

from tests.feeds.conftest import FeedMunicipality, FeedWorld, build_store, sign_structural
from tests.fixtures.mail import GENT_ADDRESS
from welfare_exchange import audit
from welfare_exchange.db import session_scope
from welfare_exchange.db.models import RetentionItem
from welfare_exchange.runinfo import RunInfo
from welfare_exchange.feeds import steps


def _open(openssl, pki, tmp_path, message: bytes) -> tuple[str, bytes]:
    path = tmp_path / "feed.eml"
    path.write_bytes(message)
    inner = openssl("smime", "-decrypt", "-in", str(path), "-recip", str(pki.gent.certificate_path), "-inkey", str(pki.gent.key_path))
    [part] = [p for p in email.message_from_bytes(inner, policy=email.policy.default).walk() if p.get_filename()]
    return part.get_filename(), part.get_payload(decode=True)


def test_a_feed_by_encrypted_mail_arrives_once_and_opens(sqlite_db, feed_env, mail_env, smime_pki, openssl, tmp_path, monkeypatch):
    nis, password = "44021", secrets.token_urlsafe(12)
    monkeypatch.setenv("AIRFLOW_CONN_KEY_44021", json.dumps({"conn_type": "generic", "password": password}))
    protocol_id = sign_structural(
        nis, "key_44021", municipality="Gent", channel="smime", channel_connection="smtp_agency",
        sender_address=GENT_ADDRESS, sender_certificates=[smime_pki.gent.certificate_pem],
    )
    gent = FeedMunicipality(sftp=None, protocol_id=protocol_id, password=password, numbers=build_store(nis, 4402))
    world = FeedWorld([gent])

    run = world.run("2026-10")

    assert run.state == "success", {(t.task_id, t.map_index): str(t.state) for t in run.get_task_instances()}
    [message] = mail_env.messages("gent")
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Content-Type"].startswith("application/pkcs7-mime") and "2026-10-01" in parsed["Subject"]
    name, data = _open(openssl, smime_pki, tmp_path, message)
    assert name == f"groeipakket_structureel_{nis}_p{protocol_id}_2026-10-01_2026-10-31.xlsx"
    rows = gent.open_feed(data)["Wijzigingen"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == gent.expected("2026-10")

    # A re-run of the month (a back-fill, a cleared task) sends nothing again.
    assert world.run("2026-10").state == "success"
    [exchange] = world.exchanges()
    info = RunInfo(exchange_date=exchange.exchange_date, dag_id="structural_feeds", run_id="rerun", task_id="deliver_feed")
    feed = {"protocol_id": protocol_id, "exchange_id": exchange.id, "interval": "2026-10-01/2026-11-01", "label": f"{nis} Gent"}
    assert steps.deliver_feed(feed, info)["already_delivered"] is True
    assert len(mail_env.messages("gent")) == 1
    actions = world.actions()
    assert actions.count(("feed.delivered", "success")) == 1
    with session_scope() as session:
        # The mailed copy is the municipality's to delete; the agency keeps only its staged file.
        assert sorted(session.scalars(sa.select(RetentionItem.kind))) == ["staging"]
        assert audit.verify(session).ok
