"""A campaign whose protocol's channel is encrypted e-mail: the report goes out S/MIME-encrypted
to the municipality's registered address and certificate (through the channel, once), and
decrypts with its key."""

from __future__ import annotations

import datetime as dt
import email
import email.policy

from tests.fixtures.mail import GENT_ADDRESS
from tests.outreach.conftest import make_protocol
from welfare_exchange import audit
from welfare_exchange.channels.registry import channel_for
from welfare_exchange.db import session_scope
from welfare_exchange.protocols import get


def test_report_over_smime_decrypts_with_the_municipalitys_key(sqlite_db, mail_env, outreach_env, smime_pki, openssl, tmp_path):
    protocol_id = make_protocol("99901", channel="smime")
    with session_scope() as session:
        protocol = get(session, protocol_id)
        protocol.sender_address = GENT_ADDRESS
        protocol.sender_certificates = [smime_pki.gent.certificate_pem]
        protocol.channel_connection = "smtp_agency"
    with session_scope() as session:
        protocol = get(session, protocol_id)
    for _ in range(2):  # as report_to_municipality sends it; a re-run sends nothing
        sent = channel_for(protocol).send_file(
            protocol, key="campaign:4:report", kind="report_delivered", exchange_id=None, name="rapport.txt",
            payload="Totaal geselecteerd: <10\n".encode(), subject="Groeipakket: rapport campagne 4",
            content_type="text/plain", actor=audit.Actor.current_user(), attempt="v1", today=dt.date.today(),
            sensitive=False,
        )
    assert sent.already_sent and sent.location is None  # the copy is in the municipality's mailbox
    [data] = mail_env.messages("gent")
    assert b"Totaal" not in data
    path = tmp_path / "report.eml"
    path.write_bytes(data)
    inner = openssl("smime", "-decrypt", "-in", str(path), "-inkey", str(smime_pki.gent.key_path),
                    "-recip", str(smime_pki.gent.certificate_path))
    entity = email.message_from_bytes(inner, policy=email.policy.default)
    [attachment] = list(entity.iter_attachments())
    assert attachment.get_filename() == "rapport.txt"
    assert attachment.get_content().replace("\r\n", "\n") == "Totaal geselecteerd: <10\n"
