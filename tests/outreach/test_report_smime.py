"""A campaign whose protocol's channel is encrypted e-mail: the report goes out S/MIME-encrypted
to the municipality's registered address and certificate, and decrypts with its key."""

from __future__ import annotations

import email
import email.policy

from tests.outreach.conftest import make_protocol
from welfare_exchange.db import session_scope
from welfare_exchange.protocols import get
from welfare_exchange.outreach import steps


def test_report_over_smime_decrypts_with_the_municipalitys_key(sqlite_db, smtp_sink, outreach_env, smime_pki, openssl):
    protocol_id = make_protocol("99901", channel="smime")
    with session_scope() as session:
        protocol = get(session, protocol_id)
        protocol.sender_address = "dpo@gent.test"
        protocol.sender_certificates = [smime_pki.gent.certificate_pem]
    with session_scope() as session:
        protocol = get(session, protocol_id)
        where = steps.deliver_report(protocol, 4, "rapport.txt", "Totaal geselecteerd: <10\n".encode())
    assert where == "smime:e-mail"
    assert smtp_sink.count() == 1
    [(rcpts, data)] = smtp_sink.messages
    assert rcpts == ("dpo@gent.test",) and b"Totaal" not in data
    inner = openssl("smime", "-decrypt", "-inkey", str(smime_pki.gent.key_path),
                    "-recip", str(smime_pki.gent.certificate_path), input=data)
    entity = email.message_from_bytes(inner, policy=email.policy.default)
    [attachment] = list(entity.iter_attachments())
    assert attachment.get_filename() == "rapport.txt"
    assert attachment.get_content().replace("\r\n", "\n") == "Totaal geselecteerd: <10\n"
