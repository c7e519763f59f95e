"""Rights per directory on the real sshd, tried with the municipality's own login and the agency's.

The municipality: upload in ``inbox/``; read and delete (not upload) in ``outbox/``; nothing
at all in ``received/`` and ``quarantine/``. The agency keeps every right its tasks use.
"""

from __future__ import annotations

import grp
import pwd
import stat

import paramiko
import pytest

from welfare_exchange.transport import sftp as transport

pytestmark = pytest.mark.sftp


def _write(session, path: str, data: bytes = b"x") -> None:
    with session.open(path, "wb") as fh:
        fh.write(data)


def _read(session, path: str) -> bytes:
    with session.open(path, "rb") as fh:
        return fh.read()


@pytest.fixture
def taken(sftp_municipality):
    """A municipality whose request was taken (now in received/), one file quarantined and a result delivered."""
    m = sftp_municipality
    m.upload_request(b"request", "aanvraag.xlsx")
    m.upload_request(b"refused", "fout.xlsx")
    hook = m.hook()
    transport.move(hook, "inbox/aanvraag.xlsx", "received")
    transport.move(hook, "inbox/fout.xlsx", "quarantine")
    transport.upload_bytes(hook, b"result", "outbox", "groeipakket_resultaat.xlsx")
    return m


def test_the_municipality_uploads_renames_and_lists_in_its_inbox(sftp_municipality):
    m = sftp_municipality
    m.upload_request(b"request", "aanvraag.xlsx")  # as .part, then renamed
    with m.sftp() as session:
        assert session.listdir("inbox") == ["aanvraag.xlsx"]
    assert transport.survey_inbox(m.hook(), settle_seconds=0.1).ready[0].name == "aanvraag.xlsx"


@pytest.mark.parametrize("folder", ["received", "quarantine"])
def test_the_municipality_can_neither_read_nor_write_received_or_quarantine(taken, folder):
    name = "aanvraag.xlsx" if folder == "received" else "fout.xlsx"
    with taken.sftp() as session:
        for attempt in (lambda: session.listdir(folder), lambda: _read(session, f"{folder}/{name}"),
                        lambda: _write(session, f"{folder}/new.xlsx"), lambda: session.remove(f"{folder}/{name}"),
                        lambda: session.rename(f"{folder}/{name}", f"inbox/{name}")):
            with pytest.raises(PermissionError):
                attempt()
    assert (taken.local_dir(folder) / name).exists()
    assert not (taken.local_dir(folder) / "new.xlsx").exists()


def test_the_municipality_reads_and_deletes_results_but_cannot_upload_to_its_outbox(taken):
    assert taken.server.outbox_uploads_refused, "this kernel has no Landlock: outbox uploads cannot be refused"
    with taken.sftp() as session:
        _write(session, "inbox/x")
        assert session.listdir("outbox") == ["groeipakket_resultaat.xlsx"]
        assert _read(session, "outbox/groeipakket_resultaat.xlsx") == b"result"
        for attempt in (lambda: _write(session, "outbox/nep.xlsx"), lambda: _write(session, "outbox/nep.xlsx.part"),
                        lambda: session.rename("outbox/groeipakket_resultaat.xlsx", "outbox/ander.xlsx"),
                        lambda: session.rename("inbox/x", "outbox/x")):
            with pytest.raises(PermissionError):
                attempt()
        session.remove("outbox/groeipakket_resultaat.xlsx")
    assert list(taken.local_dir("outbox").iterdir()) == []


def test_the_municipality_makes_no_directories_or_links(sftp_municipality):
    with sftp_municipality.sftp() as session:
        _write(session, "inbox/a.xlsx")
        for attempt in (lambda: session.mkdir("inbox/map"), lambda: session.symlink("a.xlsx", "inbox/link.xlsx"),
                        lambda: session.mkdir("outbox/map")):
            with pytest.raises(OSError):
                attempt()
    assert [p.name for p in sftp_municipality.local_dir("inbox").iterdir()] == ["a.xlsx"]


def test_the_agency_keeps_every_right_its_tasks_use(taken, tmp_path):
    hook = taken.hook()
    digest, size = transport.fetch(hook, "received/aanvraag.xlsx", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"request" and size == 7
    assert transport.remote_sha256(hook, "quarantine/fout.xlsx") is not None
    transport.upload_bytes(hook, b"report", "outbox", "groeipakket_rapport.txt")
    assert transport.delete(hook, "received/aanvraag.xlsx") and transport.delete(hook, "quarantine/fout.xlsx")
    assert transport.delete(hook, "outbox/groeipakket_rapport.txt")


def test_folders_on_disk_carry_the_documented_owners_and_modes(sftp_municipality):
    account = sftp_municipality.account
    for folder, (owner, group, mode) in {"inbox": ("wxa", "wx", 0o2770), "outbox": ("wxa", "wx", 0o2770),
                                         "received": ("wxa", "wxa", 0o700),
                                         "quarantine": ("wxa", "wxa", 0o700)}.items():
        st = account.local_dir(folder).stat()
        assert pwd.getpwuid(st.st_uid).pw_name == f"{owner}_{account.nis}", folder
        assert grp.getgrgid(st.st_gid).gr_name == f"{group}_{account.nis}", folder
        assert stat.S_IMODE(st.st_mode) == mode, folder
    assert account.chroot.stat().st_uid == 0 and stat.S_IMODE(account.chroot.stat().st_mode) == 0o755


def test_each_login_has_its_own_listener_and_key(sftp_municipality):
    m = sftp_municipality
    server, account = m.server, m.account
    for username, key, port in ((account.username, account.agency_key, server.municipality_port),
                                (account.agency_username, account.municipality_key, server.port),
                                (account.username, account.municipality_key, server.port),
                                (account.agency_username, account.agency_key, server.municipality_port)):
        with pytest.raises(paramiko.AuthenticationException):
            server.ssh_client(username, key, port=port).close()
