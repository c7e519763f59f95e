"""A real failing Method 1 run (``dag.test()``, real SFTP) alerts exactly once, without an INSZ.

The municipality encrypted its request with the wrong password: ``decrypt_and_validate``
fails without retries, the failure callback records it and alerts, and the downstream tasks
never run (so they alert nothing).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest

from tests.exchange.builders import encrypted_request
from tests.exchange.conftest import LOGICAL_DATE
from welfare_exchange import insz

pytestmark = [pytest.mark.sftp]


def test_wrong_password_run_sends_one_alert_per_channel_without_personal_data(method1, webhook, smtp):
    numbers = [number for number, _ in method1.world.children[:40]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password + "x"), "aanvraag.xlsx")

    # Its own logical date: other sessions in this checkout run DAGs with the same id (test NIS
    # codes restart at 99001) against the same Airflow metadata DB.
    run = method1.run(LOGICAL_DATE + dt.timedelta(seconds=secrets.randbelow(3600)))

    assert run.state == "failed"
    [exchange] = method1.exchanges()
    assert len(webhook.received) == 1, webhook.received
    [alert] = webhook.received
    assert alert["dag_id"] == run.dag_id and alert["run_id"] == run.run_id
    assert alert["task_id"] == "decrypt_and_validate"
    assert alert["protocol_id"] == method1.protocol_id and alert["exchange_id"] == exchange.id
    assert alert["runbook"] == "docs/RUNBOOK.md § 'The password does not open the request'"
    assert alert["cause"] == "wrong_password"
    assert "wrong_password" in alert["reason"] or "password" in alert["reason"].lower()
    assert len(smtp.messages) == 1
    assert smtp.messages[0]["Subject"].startswith("[welfare-exchange] decrypt_and_validate failed")
    everything = json.dumps(webhook.received) + smtp.messages[0].as_string()
    assert insz.find_insz_shaped(everything) == []
    assert ("task.failed", "failure") in method1.actions()
