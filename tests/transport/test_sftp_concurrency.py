"""Many connections at once on the real OpenSSH server, and the client's retry of a refused handshake."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time

import pytest

from tests.fixtures.sftp import hold_startup, own_sftp_server, release_when_logged
from welfare_exchange.transport import sftp as transport

pytestmark = pytest.mark.sftp


@pytest.fixture
def transport_log():
    """The transport module's log lines (Airflow's logging set-up keeps them from caplog)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, logger = Collect(level=logging.INFO), logging.getLogger("welfare_exchange.transport.sftp")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def _upload_as(m, barrier: threading.Barrier, data: bytes, outcomes: dict) -> None:
    """What a municipality does: connect with its own key, upload as .part, rename."""
    try:
        barrier.wait(timeout=60)
        client = m.server.ssh_client(m.account.username, m.account.municipality_key)
        try:
            with client.open_sftp() as session:
                with session.open("inbox/aanvraag.xlsx.part", "wb") as fh:
                    fh.write(data)
                session.posix_rename("inbox/aanvraag.xlsx.part", "inbox/aanvraag.xlsx")
        finally:
            client.close()
        outcomes[m.nis] = "taken"
    except Exception as exc:  # the outcome per municipality is the test's subject
        outcomes[m.nis] = f"{type(exc).__name__}: {exc}"


def test_fifty_municipalities_uploading_at_the_same_moment_are_all_taken(sftp_municipalities):
    municipalities = sftp_municipalities(50)
    data = b"\x50\x4b" + bytes(range(256)) * 64
    barrier = threading.Barrier(len(municipalities))
    outcomes: dict[str, str] = {}
    threads = [threading.Thread(target=_upload_as, args=(m, barrier, data, outcomes)) for m in municipalities]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    refused = {nis: outcome for nis, outcome in outcomes.items() if outcome != "taken"}
    assert len(outcomes) == 50 and not refused, refused
    for m in municipalities:
        assert (m.local_dir("inbox") / "aanvraag.xlsx").read_bytes() == data


def test_a_handshake_refused_at_max_startups_is_retried_with_backoff(sftp_municipality_factory, monkeypatch, transport_log):
    with own_sftp_server(max_startups="1") as server:
        account = server.add_municipality(sftp_municipality_factory().nis)
        monkeypatch.setenv(*server.env_var(account.nis))
        held = hold_startup(server)
        # sshd drops our first attempt ("past MaxStartups"); the held connection goes once that is logged.
        watcher = release_when_logged(server, held, "past MaxStartups", time.monotonic() + 30)
        try:
            survey = transport.survey_inbox(transport.sftp_hook(account.conn_id), settle_seconds=0)
        finally:
            watcher.join(timeout=40)
            held.close()

    assert survey.ready == [] and survey.waiting == 0
    retries = [line for line in transport_log if "refused the connection" in line]
    assert retries and f"attempt 1 of {transport.CONNECT_ATTEMPTS}" in retries[0], retries
    assert all(account.conn_id in line and "inbox" in line for line in retries)


def test_a_refused_login_is_not_retried(sftp_municipality, monkeypatch, transport_log, tmp_path):
    m = sftp_municipality
    stranger = tmp_path / "stranger"  # a key no authorized_keys lists
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    conn = m.connection
    conn["extra"]["key_file"] = str(stranger)
    monkeypatch.setenv(f"AIRFLOW_CONN_{m.conn_id.upper()}", json.dumps(conn))
    started = time.monotonic()
    with pytest.raises(transport.SftpTransportError, match="authentication refused"):
        transport.survey_inbox(transport.sftp_hook(m.conn_id))
    assert time.monotonic() - started < transport.CONNECT_FIRST_DELAY * 4
    assert not [line for line in transport_log if "refused the connection" in line]


def test_the_backoff_doubles_with_jitter_and_is_capped():
    for attempt in range(1, 10):
        base = min(transport.CONNECT_MAX_DELAY, transport.CONNECT_FIRST_DELAY * 2 ** (attempt - 1))
        delays = [transport.connect_delay(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in delays)
        assert max(delays) - min(delays) > 0  # jitter: refused clients do not come back together
