"""Delivering results over SFTP: .part + rename, verification, idempotence, crash and retry."""

from __future__ import annotations

import hashlib
import os

import paramiko
import pytest

from welfare_exchange.transport import sftp as transport

pytestmark = pytest.mark.sftp


@pytest.fixture
def renames(monkeypatch):
    """Record every SFTP rename the client asks for (successful or not)."""
    calls: list[tuple[str, str]] = []
    original = paramiko.SFTPClient.rename

    def spy(self, oldpath, newpath):
        calls.append((oldpath, newpath))
        return original(self, oldpath, newpath)

    monkeypatch.setattr(paramiko.SFTPClient, "rename", spy)
    return calls


def test_deliver_uploads_as_part_renames_and_verifies(sftp_municipality, tmp_path, renames):
    m = sftp_municipality
    data = os.urandom(2 * 1024 * 1024)
    local = tmp_path / "result.xlsx"
    local.write_bytes(data)

    sha, size = transport.deliver(m.hook(), local, "outbox", "result.xlsx")

    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert renames == [("outbox/result.xlsx.part", "outbox/result.xlsx")]
    assert m.read_outbox() == {"result.xlsx": data}
    assert sorted(p.name for p in m.local_dir("outbox").iterdir()) == ["result.xlsx"]


def test_a_second_delivery_of_the_same_content_changes_nothing(sftp_municipality, tmp_path, renames):
    m = sftp_municipality
    local = tmp_path / "result.xlsx"
    local.write_bytes(os.urandom(100_000))
    first = transport.deliver(m.hook(), local, "outbox", "result.xlsx")
    on_disk = m.local_dir("outbox") / "result.xlsx"
    before = on_disk.stat()

    again = transport.deliver(m.hook(), local, "outbox", "result.xlsx")

    after = on_disk.stat()
    assert again == first
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert len(renames) == 1


def test_different_content_under_a_delivered_name_is_refused(sftp_municipality, tmp_path):
    m = sftp_municipality
    transport.upload_bytes(m.hook(), b"version one", "outbox", "result.xlsx")

    with pytest.raises(transport.DeliveryConflict) as err:
        transport.upload_bytes(m.hook(), b"version two", "outbox", "result.xlsx")

    message = str(err.value)
    assert m.conn_id in message and "'outbox'" in message and "version" not in message
    assert m.read_outbox() == {"result.xlsx": b"version one"}
    assert sorted(p.name for p in m.local_dir("outbox").iterdir()) == ["result.xlsx"]


def test_a_stale_part_next_to_a_complete_delivery_is_cleaned_up(sftp_municipality):
    m = sftp_municipality
    report = b"validation report"
    transport.upload_bytes(m.hook(), report, "outbox", "report.xlsx")
    # As if an earlier attempt died between the rename's link and unlink.
    (m.local_dir("outbox") / "report.xlsx.part").write_bytes(report[:5])

    result = transport.upload_bytes(m.hook(), report, "outbox", "report.xlsx")

    assert result == (hashlib.sha256(report).hexdigest(), len(report))
    assert sorted(p.name for p in m.local_dir("outbox").iterdir()) == ["report.xlsx"]


@pytest.mark.parametrize("name", ["", ".hidden", "x.part", "../escape.xlsx"])
def test_delivery_names_are_plain(sftp_municipality, name):
    with pytest.raises(ValueError):
        transport.upload_bytes(sftp_municipality.hook(), b"x", "outbox", name)


def test_server_killed_during_a_large_upload_then_the_retry_delivers_exactly_once(
    sftp_municipality, tmp_path, monkeypatch, renames
):
    m = sftp_municipality
    server = m.server
    data = os.urandom(20 * 1024 * 1024)
    local = tmp_path / "result.xlsx"
    local.write_bytes(data)
    original_read = transport._HashingReader.read
    killed = []

    def read_then_crash(self, n=-1):
        # kill -9 the whole server (listener and session processes) a quarter into the upload.
        if self.size >= 5 * 1024 * 1024 and not killed:
            server.kill()
            killed.append(True)
        return original_read(self, n)

    monkeypatch.setattr(transport._HashingReader, "read", read_then_crash)
    try:
        with pytest.raises(transport.SftpTransportError) as err:
            transport.deliver(m.hook(), local, "outbox", "result.xlsx")
        assert killed and m.conn_id in str(err.value)
        assert not (m.local_dir("outbox") / "result.xlsx").exists()
    finally:
        monkeypatch.setattr(transport._HashingReader, "read", original_read)
        server.start()

    # The task's retry builds a new hook, as Airflow would.
    sha, size = transport.deliver(m.hook(), local, "outbox", "result.xlsx")

    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    final_renames = [call for call in renames if call[1] == "outbox/result.xlsx"]
    assert len(final_renames) == 1  # the crashed attempt never got to its rename
    assert sorted(p.name for p in m.local_dir("outbox").iterdir()) == ["result.xlsx"]
    assert m.read_outbox() == {"result.xlsx": data}
    # And once more, as a cleared task would: nothing happens.
    assert transport.deliver(m.hook(), local, "outbox", "result.xlsx") == (sha, size)
    assert len([call for call in renames if call[1] == "outbox/result.xlsx"]) == 1
