"""Method 1 under faults, with ``dag.test()`` against the real OpenSSH server: a request still
being uploaded is never read half, and an SFTP server killed during delivery and restarted
gets the result exactly once on the retry."""

from __future__ import annotations

import functools

import pytest

from tests.exchange.builders import encrypted_request, expected_pairs
from tests.exchange.conftest import EXCHANGE_DATE
from welfare_exchange.transport import sftp as transport

pytestmark = [pytest.mark.sftp]


def test_a_request_uploaded_in_two_chunks_is_never_read_half(method1, monkeypatch):
    numbers = [n for n, _ in method1.world.children[:150]]
    data = encrypted_request(numbers, method1.password)
    half = len(data) // 2
    surveyed = transport.survey_inbox
    pauses = []

    # No ".part" and no rename: a municipality whose client writes in place. The first half is
    # there before the sensor's first look; the rest lands in its settle pause — by construction,
    # not by racing a sleep against the pause.
    with method1.municipality.sftp() as client, client.open("inbox/aanvraag.xlsx", "wb") as remote:
        remote.write(data[:half])
        remote.flush()

        def upload_goes_on(seconds):
            pauses.append(seconds)
            if len(pauses) == 1:
                remote.write(data[half:])
                remote.flush()

        monkeypatch.setattr(transport, "survey_inbox", functools.partial(surveyed, sleep=upload_goes_on))
        run = method1.run()

    assert len(pauses) >= 2, "the sensor should have looked again after the file grew"
    assert run.state == "success"
    [exchange] = method1.exchanges()
    assert exchange.request_size == len(data) and exchange.state == "delivered"
    rows = method1.open_result(next(iter(method1.results().values())))["Resultaat"][1:]
    assert [(r[0], r[1], r[2], r[3] or None) for r in rows] == expected_pairs(method1.world, set(numbers), EXCHANGE_DATE)


def test_sftp_killed_during_delivery_then_restarted_delivers_exactly_once(method1, monkeypatch):
    numbers = [n for n, _ in method1.world.children[:80]]
    method1.municipality.upload_request(encrypted_request(numbers, method1.password), "aanvraag.xlsx")
    server = method1.municipality.server
    original = transport.upload_bytes  # the result is read from staging and uploaded from memory
    calls = []

    def crash_first_time(hook, data, remote_dir, name):
        if not name.endswith(".xlsx"):  # the receipt goes out beside the delivery: only the result crashes
            return original(hook, data, remote_dir, name)
        calls.append(name)
        if len(calls) > 1:
            return original(hook, data, remote_dir, name)
        # Half a file lands as name.part, then the server dies mid-transfer.
        with method1.municipality.agency_sftp() as client, client.open(f"{remote_dir}/{name}.part", "wb") as remote:
            remote.write(data[:1000])
        server.kill()
        try:
            # Down for all of the hook's own connection retries: this try fails, Airflow retries...
            return original(hook, data, remote_dir, name)
        finally:
            server.start()  # ...and the retry finds the server back (restarted on that condition, not a timer).

    monkeypatch.setattr(transport, "upload_bytes", crash_first_time)
    run = method1.run()

    assert run.state == "success"
    deliver = next(ti for ti in run.get_task_instances() if ti.task_id == "deliver_result")
    assert deliver.try_number >= 2, "the first delivery try should have failed and been retried"
    outbox = method1.municipality.account.local_dir("outbox")
    receipt = f"groeipakket_ontvangstbevestiging_{method1.municipality.nis}_exchange-1.txt"
    assert sorted(p.name for p in outbox.iterdir()) == [receipt, next(iter(method1.results()))]  # no .part left
    assert len(method1.side_effects("delivered")) == 1
    assert [a for a, _ in method1.actions()].count("result.delivered") == 1
