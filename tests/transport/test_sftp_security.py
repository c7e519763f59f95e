"""Host-key pinning and per-municipality confinement on the real OpenSSH server."""

from __future__ import annotations

import json
import subprocess

import paramiko
import pytest

from welfare_exchange.transport import sftp as transport

pytestmark = pytest.mark.sftp


def test_the_airflow_hook_connects_with_the_pinned_host_key(sftp_municipality):
    m = sftp_municipality
    extra = m.connection["extra"]
    assert extra["host_key"] == m.server.host_key_line and "no_host_key_check" not in extra
    assert m.hook().list_directory("/") == ["inbox", "outbox", "quarantine", "received"]


def _other_host_key(tmp_path) -> str:
    key = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_a_wrong_pinned_host_key_refuses_to_connect(sftp_municipality, tmp_path, monkeypatch):
    m = sftp_municipality
    conn = m.connection
    conn["extra"]["host_key"] = _other_host_key(tmp_path)
    monkeypatch.setenv(f"AIRFLOW_CONN_{m.conn_id.upper()}", json.dumps(conn))

    with pytest.raises(transport.SftpHostKeyError) as err:
        transport.list_ready_requests(transport.sftp_hook(m.conn_id, conn_retry_attempts=1))
    assert m.conn_id in str(err.value) and "host key" in str(err.value)


def test_without_a_pinned_host_key_the_connection_is_refused(sftp_municipality, monkeypatch):
    m = sftp_municipality
    conn = m.connection
    del conn["extra"]["host_key"]
    monkeypatch.setenv(f"AIRFLOW_CONN_{m.conn_id.upper()}", json.dumps(conn))

    with pytest.raises(transport.SftpTransportError):
        transport.list_ready_requests(transport.sftp_hook(m.conn_id, conn_retry_attempts=1))


def test_a_municipality_cannot_reach_another_municipalitys_directories(sftp_municipality_factory):
    a, b = sftp_municipality_factory(), sftp_municipality_factory()
    b.upload_request(b"b's request", "request.xlsx")
    server = a.server

    # A's keys (municipality's or agency's) do not open B's account.
    for key in (a.account.municipality_key, a.account.agency_key):
        with pytest.raises(paramiko.AuthenticationException):
            server.ssh_client(b.account.username, key).close()

    with a.sftp() as sftp:
        assert sorted(sftp.listdir("/")) == ["inbox", "outbox", "quarantine", "received"]
        assert sorted(sftp.listdir("/..")) == ["inbox", "outbox", "quarantine", "received"]  # chroot: no way up
        for path in (str(b.account.chroot), str(b.local_dir("inbox")), f"../{b.nis}/inbox", "/municipalities"):
            with pytest.raises(IOError):
                sftp.listdir(path)
        for path in (f"{b.local_dir('inbox')}/evil.xlsx", f"../{b.nis}/inbox/evil.xlsx", "/evil.xlsx"):
            with pytest.raises(IOError):
                sftp.open(path, "wb").close()
    # The agency's connection for A is confined the same way.
    assert transport.list_ready_requests(a.hook(), directory="inbox", settle_seconds=0.1) == []
    with pytest.raises(transport.SftpTransportError):
        transport.list_ready_requests(a.hook(), directory=str(b.local_dir("inbox")))
    assert sorted(p.name for p in b.local_dir("inbox").iterdir()) == ["request.xlsx"]


def test_a_municipality_gets_no_shell_no_command_and_no_forwarding(sftp_municipality):
    m = sftp_municipality
    client = m.server.ssh_client(m.account.username, m.account.municipality_key)
    try:
        chan = client.get_transport().open_session(timeout=10)
        chan.settimeout(10)
        chan.exec_command("id; echo shell-reached")
        chan.shutdown_write()
        output = b""
        while chunk := chan.recv(4096):
            output += chunk
        # ForceCommand runs internal-sftp instead of the command: nothing of it ever runs.
        assert b"shell-reached" not in output and b"uid=" not in output

        with pytest.raises(paramiko.SSHException):
            client.get_transport().open_session(timeout=10).get_pty()

        with pytest.raises(paramiko.ChannelException):
            client.get_transport().open_channel(
                "direct-tcpip", ("127.0.0.1", m.server.port), ("127.0.0.1", 0), timeout=10
            )
    finally:
        client.close()
