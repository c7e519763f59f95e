"""The receipt (issue 16 §7): a request taken and validated is acknowledged to the municipality
on its channel — exchange id, received at, SHA-256 of its file, rows to be processed — once,
audited, with no personal data. (Over S/MIME: ``test_method1_smime_dag``'s first test.)"""

from __future__ import annotations

import hashlib

import pytest

from tests.dagutil import task_states
from tests.exchange.builders import encrypted_request
from tests.exchange.conftest import EXCHANGE_DATE
from welfare_exchange.exchange import steps
from welfare_exchange.insz import find_insz_shaped
from welfare_exchange.runinfo import RunInfo

pytestmark = [pytest.mark.sftp]


def test_the_municipality_gets_one_receipt_on_sftp_and_a_rerun_sends_nothing(method1):
    numbers = [n for n, _ in method1.world.children[:50]]
    upload = encrypted_request(numbers + ["12345"], method1.password)
    method1.municipality.upload_request(upload, "aanvraag.xlsx")

    run = method1.run()

    assert run.state == "success", task_states(run)
    assert task_states(run)["send_receipt"] == "success"
    [exchange] = method1.exchanges()
    receipts = {k: v for k, v in method1.outbox().items() if "ontvangstbevestiging" in k}
    assert list(receipts) == [f"groeipakket_ontvangstbevestiging_{method1.municipality.nis}_exchange-{exchange.id}.txt"]
    [text] = receipts.values()
    assert f"exchange: {exchange.id}".encode() in text
    assert hashlib.sha256(upload).hexdigest().encode() in text, "the SHA-256 of the file the municipality sent"
    assert f"rows to be processed: {exchange.counts['valid']}".encode() in text and exchange.counts["valid"] == 50
    assert exchange.created_at.isoformat(timespec="seconds")[:16].encode() in text
    assert not find_insz_shaped(text.decode()) and b"aanvraag.xlsx" not in text
    assert not any(n.encode() in text for n in numbers)

    # Cleared and re-run: nothing is sent twice, nothing recorded twice.
    info = RunInfo(exchange_date=EXCHANGE_DATE, dag_id=run.dag_id, run_id=run.run_id, task_id="send_receipt", try_number=2)
    assert steps.send_receipt(exchange.id, info)["already_sent"] is True
    assert {k: v for k, v in method1.outbox().items() if "ontvangstbevestiging" in k} == receipts
    assert len(method1.side_effects("receipt_sent")) == 1
    assert method1.actions().count(("request.acknowledged", "success")) == 1


def test_a_refused_request_gets_its_report_and_no_receipt(method1):
    numbers = [n for n, _ in method1.world.children[:10]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password + "x"), "aanvraag.xlsx")

    run = method1.run()

    assert task_states(run)["send_receipt"] == "upstream_failed"
    assert not [k for k in method1.outbox() if "ontvangstbevestiging" in k]
    assert ("request.acknowledged", "success") not in method1.actions()
